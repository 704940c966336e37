"""Refused orders as demand: once per client, up to what that client could buy.

A flood of refused orders on a sold-out donut must not buy production from the factory;
honest customers who find it sold out must still raise the reorder point.
"""

import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from inventory import policy
from inventory.models import DemandSnapshot, Factory, Product, RefusedDemand, ReorderDecision
from inventory.services import _fold_refused_demand, refresh_estimates
from shop.exceptions import OutOfStock
from shop.services import place_order

pytestmark = pytest.mark.usefixtures("no_events")

SKU = "CP-502101"
REFRESH = 2.0


def refresh_after(seconds: float) -> None:
    """One refresh of the estimates loop, `seconds` after the last one."""
    DemandSnapshot.objects.update(taken_at=F("taken_at") - timedelta(seconds=seconds))
    refresh_estimates()


def refused(quantity: int, *, address: str = "", customer: str = "") -> None:
    with pytest.raises(OutOfStock):
        place_order(sku=SKU, quantity=quantity, address=address, customer=customer)


def ordered_from_factory() -> int:
    return ReorderDecision.objects.aggregate(units=Sum("quantity"))["units"] or 0


def start_sold_out(product: Product) -> None:
    """A sold-out donut with nothing on order and no history; the loop has looked once."""
    ReorderDecision.objects.all().delete()
    RefusedDemand.objects.all().delete()
    DemandSnapshot.objects.all().delete()
    Product.objects.filter(pk=product.pk).update(
        stock=0, on_order=0, demand_rate=0.0, reorder_point=0, units_refused=0, orders_refused=0
    )
    refresh_estimates()


def rush(product: Product, waves: list[list[tuple[str, int]]], *, quiet: int = 15) -> int:
    """Refused orders, one wave (client, quantity) per refresh interval, then `quiet`
    intervals without orders, as the loop runs; the units the shop ordered meanwhile."""
    start_sold_out(product)
    for wave in [*waves, *[[]] * quiet]:
        for address, quantity in wave:
            refused(quantity, address=address)
        refresh_after(REFRESH)
    return ordered_from_factory()


@pytest.fixture
def limits(settings, factory):  # type: ignore[no-untyped-def]
    """`make run`'s limits, and a factory whose lead time is measured at 10 s."""
    settings.PURCHASE_LIMIT = 10
    settings.PURCHASE_LIMIT_WINDOW = 3600
    settings.ORDER_MAX_QUANTITY = 100
    Factory.objects.filter(pk=factory.pk).update(lead_time=10.0)


@pytest.mark.usefixtures("limits")
def test_a_refused_flood_from_one_client_orders_what_one_honest_customer_would(product):
    # 15 refused orders of 100 units a second for 20 s, from one client.
    flood = rush(product, [[("attacker", 100)] * 30] * 10)
    honest = rush(product, [[("customer", 10)]])

    assert RefusedDemand.objects.get().units == 10
    print(f"\nflood of 30,000 refused units: {flood} units ordered; honest customer: {honest}")
    assert flood <= honest + 1  # the refresh intervals differ by the time the flood takes
    assert flood <= 30


@pytest.mark.usefixtures("limits")
def test_a_refused_flood_from_a_few_clients_orders_what_as_many_honest_customers_would(
    product,
):
    clients = [f"attacker-{n}" for n in range(5)]
    flood = rush(product, [[(clients[n % 5], 100) for n in range(30)]] * 10)
    honest = rush(product, [[(client, 10) for client in clients]])

    print(f"\nflood from 5 clients: {flood} units ordered; 5 honest customers: {honest}")
    assert flood <= honest + 1
    assert flood <= 100


@pytest.mark.usefixtures("limits")
def test_honest_refused_demand_from_many_clients_raises_the_reorder_point(product):
    start_sold_out(product)
    for n in range(200):
        refused(2, address=f"customer-{n}")

    refresh_after(REFRESH)

    product.refresh_from_db()
    rate = policy.demand_rate(previous=0.0, units=400, seconds=REFRESH, horizon=15.0)
    assert product.demand_rate == pytest.approx(rate, rel=0.05)
    assert product.reorder_point == pytest.approx(
        policy.reorder_point(rate=rate, lead_time=10.0, review=REFRESH, safety=0.5), rel=0.05
    )
    assert product.reorder_point > 150
    assert product.on_order > 150  # the loop ordered for it


@pytest.mark.usefixtures("limits")
def test_the_ceiling_bounds_the_reorder_point_and_units_on_order(product, caplog, settings):
    settings.PURCHASE_LIMIT = 0  # each client counts one order's worth: 100 units
    Product.objects.filter(pk=product.pk).update(reorder_ceiling=300)
    caplog.set_level(logging.WARNING, logger="inventory.services")

    ordered = rush(product, [[(f"client-{n}", 100) for n in range(100)]] * 3, quiet=3)

    product.refresh_from_db()
    assert product.reorder_point == 300
    assert ordered == product.on_order == 300
    warnings = [r.getMessage() for r in caplog.records if "above the ceiling" in r.getMessage()]
    assert len(warnings) == 1
    assert "sku=CP-502101" in warnings[0] and "ceiling=300" in warnings[0]


def test_the_factory_ceiling_applies_unless_the_product_sets_its_own(product, factory, settings):
    settings.ORDER_MAX_QUANTITY = 100
    Factory.objects.filter(pk=factory.pk).update(reorder_ceiling=120, lead_time=10.0)

    ordered = rush(product, [[(f"client-{n}", 100) for n in range(100)]] * 3, quiet=3)

    assert ordered == 120
    assert Product.objects.get().reorder_point == 120


@pytest.mark.usefixtures("limits")
def test_refusals_counted_across_clients_and_customers(product):
    start_sold_out(product)
    refused(100, address="a")
    refused(100, address="a", customer="session-1")  # the address is the key
    refused(100, customer="session-2")  # no address: the customer is
    refused(100)  # an internal caller: one order's worth for all of them
    refused(100)

    counted = dict(RefusedDemand.objects.values_list("client", "units"))
    assert counted == {"a": 10, "session-2": 10, "": 100}
    product.refresh_from_db()
    assert (product.orders_refused, product.units_refused) == (5, 500)  # the raw counts


@pytest.mark.usefixtures("limits")
def test_a_product_limit_sets_what_its_refusals_may_count(product):
    Product.objects.filter(pk=product.pk).update(purchase_limit=3)
    start_sold_out(product)
    refused(100, address="a")

    assert RefusedDemand.objects.get().units == 3


@pytest.mark.usefixtures("limits")
@pytest.mark.django_db(transaction=True)
def test_one_clients_refusals_at_once_count_up_to_the_limit_exactly(product):
    Product.objects.filter(pk=product.pk).update(stock=0, on_order=10)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(5):
                refused(3, address="attacker")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    row = RefusedDemand.objects.get()
    assert (row.units, row.pending) == (10, 10)
    product.refresh_from_db()
    assert (product.orders_refused, product.units_refused) == (40, 120)


@pytest.mark.usefixtures("limits")
@pytest.mark.django_db(transaction=True)
def test_refusals_counted_while_the_loop_folds_them_are_folded_once(product):
    Product.objects.filter(pk=product.pk).update(stock=0, on_order=10)
    barrier = threading.Barrier(5)
    done = threading.Event()
    errors: list[BaseException] = []
    folded: list[int] = []

    def customers(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(40):
                refused(1, address=f"customer-{n}-{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def loop() -> None:
        try:
            barrier.wait(timeout=10)
            while not done.is_set():
                with transaction.atomic():
                    folded.append(sum(_fold_refused_demand(timezone.now()).values()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=customers, args=(n,)) for n in range(4)]
    folder = threading.Thread(target=loop)
    for thread in [*threads, folder]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    folder.join(timeout=30)
    with transaction.atomic():
        folded.append(sum(_fold_refused_demand(timezone.now()).values()))

    assert errors == []
    assert sum(folded) == 160
    assert RefusedDemand.objects.aggregate(units=Sum("units"))["units"] == 160


@pytest.mark.usefixtures("limits")
@pytest.mark.django_db(transaction=True)
def test_refusals_and_the_estimates_loop_at_once_wait_for_each_other_without_deadlock(product):
    Product.objects.filter(pk=product.pk).update(stock=0, on_order=10)
    refresh_estimates()
    barrier = threading.Barrier(5)
    done = threading.Event()
    errors: list[BaseException] = []

    def customers(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(40):
                refused(5, address=f"customer-{n}-{i % 4}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def loop() -> None:
        try:
            barrier.wait(timeout=10)
            while not done.is_set():
                refresh_after(0.1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=customers, args=(n,)) for n in range(4)]
    refresher = threading.Thread(target=loop)
    for thread in [*threads, refresher]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    refresher.join(timeout=30)
    refresh_after(0.1)

    assert errors == []
    # 16 clients, each capped at 10 units; all of it folded into demand by now.
    assert RefusedDemand.objects.aggregate(units=Sum("units"), pending=Sum("pending")) == {
        "units": 160,
        "pending": 0,
    }
    product.refresh_from_db()
    assert product.orders_refused == 160
