"""Reorder decisions against MySQL: when they happen, how much, and only once."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory import events, outbox
from inventory.models import (
    DemandSnapshot,
    Factory,
    Product,
    RefusedDemand,
    ReorderDecision,
    StockAdjustment,
)
from inventory.services import (
    receive_stock,
    refresh_estimates,
    release_on_order,
    review,
    set_stock,
    take_stock,
)

pytestmark = pytest.mark.usefixtures("no_events")


def test_an_order_that_empties_the_shelf_with_nothing_on_order_orders_the_minimum(product):
    outcome = take_stock(sku="CP-502101", quantity=3)

    assert outcome.depleted is True
    decision = outcome.decision
    assert decision == ReorderDecision.objects.get()
    assert (decision.quantity, decision.on_hand, decision.on_order) == (10, 0, 0)
    assert decision.reason.startswith("empty with nothing on order")
    product.refresh_from_db()
    assert product.on_order == 10


def test_adaptive_reorders_when_on_hand_and_on_order_fall_below_the_point(product):
    Product.objects.filter(pk=product.pk).update(
        stock=30, on_order=0, reorder_point=25, demand_rate=2.0
    )

    assert take_stock(sku="CP-502101", quantity=5).decision is None  # 25: not below
    decision = take_stock(sku="CP-502101", quantity=1).decision  # 24 < 25

    # Up to 25 + 2/s * 2 s review = 29, from 24: 5, raised to the minimum of 10.
    assert decision.quantity == 10
    assert (decision.on_hand, decision.reorder_point) == (24, 25)
    assert take_stock(sku="CP-502101", quantity=1).decision is None  # 23 + 10 on order
    product.refresh_from_db()
    assert product.on_order == 10


def test_several_orders_may_be_in_flight_for_one_product(product):
    Product.objects.filter(pk=product.pk).update(
        stock=100, reorder_point=200, demand_rate=20.0, min_order_quantity=10
    )

    first = take_stock(sku="CP-502101", quantity=1).decision
    Product.objects.filter(pk=product.pk).update(reorder_point=400)
    second = take_stock(sku="CP-502101", quantity=1).decision

    assert first.quantity == 200 + 40 - 99
    assert second.quantity == 400 + 40 - (98 + first.quantity)
    product.refresh_from_db()
    assert product.on_order == first.quantity + second.quantity


def test_at_zero_mode_orders_the_restock_quantity_only_when_empty(product):
    Product.objects.filter(pk=product.pk).update(
        replenishment_mode=Product.Mode.AT_ZERO, reorder_point=100, restock_quantity=7
    )

    assert take_stock(sku="CP-502101", quantity=2).decision is None
    decision = take_stock(sku="CP-502101", quantity=1).decision

    assert decision.quantity == 7
    assert decision.mode == Product.Mode.AT_ZERO


def test_the_order_path_pays_no_extra_statement_when_no_decision_is_due(product):
    Product.objects.filter(pk=product.pk).update(stock=50, reorder_point=10)

    with CaptureQueriesContext(connection) as queries:
        take_stock(sku="CP-502101", quantity=1)

    # The conditional UPDATE and the state read, in one round trip.
    assert [q["sql"].split("; ")[1][:20] for q in queries] == ["SELECT ROW_COUNT(), "]


def test_a_refusal_is_one_counting_update_and_the_state_read(product):
    Product.objects.filter(pk=product.pk).update(stock=0, on_order=10, depleted_at=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        outcome = take_stock(sku="CP-502101", quantity=2)

    # The take that did not match, then the counts and the state read under its lock, in
    # one round trip: the product's raw counts, and the client's demand up to its cap.
    assert len(queries) == 2
    assert "`units_refused` = `units_refused` + 2" in queries[1]["sql"]
    assert "INSERT INTO `inventory_refuseddemand`" in queries[1]["sql"]
    assert (outcome.taken, outcome.state.remaining, outcome.state.on_order) == (False, 0, 10)
    product.refresh_from_db()
    assert (product.orders_refused, product.units_refused) == (1, 2)


def test_factory_capacity_caps_what_its_products_have_on_order(factory, product):
    Factory.objects.filter(pk=factory.pk).update(capacity=15)
    other = Product.objects.create(sku="CP-502199", name="other", price=1, stock=0, factory=factory)

    first = take_stock(sku="CP-502101", quantity=3).decision
    second = review(product_id=other.pk)

    assert first.quantity == 10
    assert second.quantity == 5
    assert "capped by factory capacity (5 left)" in second.reason
    assert review(product_id=other.pk) is None


@pytest.mark.django_db(transaction=True)
def test_two_deciders_at_once_make_one_decision(product):
    Product.objects.filter(pk=product.pk).update(stock=0)
    barrier = threading.Barrier(8)
    errors: list[str] = []

    def decide() -> None:
        try:
            barrier.wait(timeout=10)
            review(product_id=product.pk)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert ReorderDecision.objects.count() == 1
    product.refresh_from_db()
    assert product.on_order == 10


def settle(product: Product, settings) -> None:  # type: ignore[no-untyped-def]
    """Age the product's counts past the settle delay, as if staff had typed them then."""
    StockAdjustment.objects.filter(product=product).update(
        created_at=timezone.now() - timedelta(seconds=settings.STOCK_COUNT_SETTLE + 1)
    )


def test_a_count_to_zero_reorders_once_it_has_settled(product, settings):
    set_stock(sku="CP-502101", quantity=0, note="count")

    assert not ReorderDecision.objects.exists()
    assert refresh_estimates() == []  # still settling
    settle(product, settings)
    [decision] = refresh_estimates()

    assert decision.quantity == 10


def test_a_count_typed_and_reverted_within_the_settle_delay_decides_nothing(product, settings):
    set_stock(sku="CP-502101", quantity=0, note="typo")
    refresh_estimates()
    set_stock(sku="CP-502101", quantity=20, note="typo corrected")
    settle(product, settings)

    assert refresh_estimates() == []
    assert not ReorderDecision.objects.exists()
    product.refresh_from_db()
    assert (product.stock, product.on_order) == (20, 0)


def test_an_arrival_takes_its_units_off_order_and_measures_the_lead_time(factory, product):
    Factory.objects.filter(pk=factory.pk).update(lead_time=40.0)
    Product.objects.filter(pk=product.pk).update(on_order=25)

    receive_stock(product_id=product.pk, quantity=10, note="restock 1", lead_time=10.0)

    product.refresh_from_db()
    factory.refresh_from_db()
    assert (product.stock, product.on_order) == (13, 15)
    assert factory.lead_time_samples == [10.0]
    assert factory.lead_time == 40.0  # one measure alone does not replace the estimate
    receive_stock(product_id=product.pk, quantity=10, note="restock 2", lead_time=11.0)
    factory.refresh_from_db()
    assert factory.lead_time == 11.0


def test_one_slow_callback_moves_the_lead_time_little(factory, product):
    Factory.objects.filter(pk=factory.pk).update(lead_time=10.0)
    for seconds in (10.2, 9.9, 10.1, 131.0):
        receive_stock(product_id=product.pk, quantity=1, note="restock", lead_time=seconds)

    factory.refresh_from_db()
    assert factory.lead_time == pytest.approx(10.15)  # the median of the four
    assert factory.lead_time_samples == [10.2, 9.9, 10.1, 131.0]


def test_on_order_never_goes_below_zero(product):
    Product.objects.filter(pk=product.pk).update(on_order=5)

    receive_stock(product_id=product.pk, quantity=10, note="late arrival")
    release_on_order(product_id=product.pk, quantity=10)

    product.refresh_from_db()
    assert product.on_order == 0


def test_refresh_estimates_measures_demand_and_moves_the_reorder_point(factory, product):
    Factory.objects.filter(pk=factory.pk).update(lead_time=10.0)
    Product.objects.filter(pk=product.pk).update(stock=500)
    refresh_estimates()  # first look: a snapshot, no rate yet
    snapshot = DemandSnapshot.objects.get(product=product)
    DemandSnapshot.objects.filter(pk=snapshot.pk).update(
        taken_at=snapshot.taken_at - timedelta(seconds=4)
    )
    # Units sold, and refused units counted as some client's demand (the raw count is not).
    Product.objects.filter(pk=product.pk).update(units_sold=30, units_refused=500)
    RefusedDemand.objects.create(
        product=product, client="c", window_start=timezone.now(), units=10, pending=10
    )

    refresh_estimates()

    product.refresh_from_db()
    # 40 units over ~4 s: 10/s, weighted by 1 - e^(-4/15) from 0.
    assert product.demand_rate == pytest.approx(10 * (1 - 2.718281828 ** (-4 / 15)), rel=0.05)
    expected_point = product.demand_rate * (10.0 + 2.0) * 1.5
    assert product.reorder_point == pytest.approx(expected_point, abs=1)
    assert not ReorderDecision.objects.exists()  # 500 on hand is above it


def test_refresh_estimates_announces_refusals_in_aggregate_once(product, monkeypatch):
    refresh_estimates()
    Product.objects.filter(pk=product.pk).update(
        orders_refused=7, units_refused=9, orders_limited=2
    )
    heard: list = []
    monkeypatch.setattr(outbox, "record", heard.extend)

    refresh_estimates()
    refresh_estimates()

    refused = [e for e in heard if e.event_type == events.ORDERS_REFUSED]
    assert [
        (e.sku, e.body["refused_orders"], e.body["refused_units"], e.body["limited_orders"])
        for e in refused
    ] == [("CP-502101", 7, 9, 2)]


def test_refresh_estimates_restocks_a_product_left_at_zero_however_it_got_there(product):
    Product.objects.filter(pk=product.pk).update(stock=0)  # e.g. the catalog's sold-out donut

    decisions = refresh_estimates()

    assert [d.quantity for d in decisions] == [10]
    assert refresh_estimates() == []
