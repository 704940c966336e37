"""The staff dashboard: who may see it, and the series it draws, derived from the database."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from factory_bridge.models import FailedMessage, RestockRequest
from inventory import events
from inventory.models import Product, ReorderDecision, StockAdjustment
from nudged.core.models import OutboxEvent
from nudged.ops.dashboard import selectors
from shop.models import Basket, Order
from shop.services import place_order

pytestmark = pytest.mark.django_db

# A fixed "now": 12:00:30 UTC, half a minute into the last bucket of the hour.
NOW = datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)
HOUR = selectors.window("hour", now=NOW)


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def bucket(moment: datetime) -> int:
    return int((moment - HOUR.start).total_seconds() // 60)


def sell(
    product: Product, *, quantity: int, left: int, when: datetime, basket: Basket | None = None
) -> Order:
    order = Order.objects.create(
        product=product,
        quantity=quantity,
        status=Order.Status.COMPLETED,
        unit_price=product.price,
        remaining_stock=left,
        basket=basket,
    )
    Order.objects.filter(pk=order.pk).update(created_at=when, published_at=when)
    return order


def test_the_window_ends_with_the_current_bucket():
    assert HOUR.end == datetime(2026, 11, 28, 12, 1, tzinfo=UTC)
    assert HOUR.start == HOUR.end - timedelta(hours=1)
    assert HOUR.buckets == 60
    day = selectors.window("day", now=NOW)
    assert (day.buckets, day.bucket_seconds) == (288, 300)
    assert day.end == datetime(2026, 11, 28, 12, 5, tzinfo=UTC)


def test_orders_per_minute_come_from_the_orders_and_the_refusal_counts(product):
    for _ in range(3):
        sell(product, quantity=1, left=2, when=at(10))
    sell(product, quantity=1, left=1, when=at(0.2))
    sell(product, quantity=1, left=1, when=at(61))  # before the window
    refused = OutboxEvent.objects.create(
        topic="sales",
        event_type=events.ORDERS_REFUSED,
        body={"refused_orders": 4, "refused_units": 9, "limited_orders": 1},
        attributes={},
        sku=product.sku,
    )
    OutboxEvent.objects.filter(pk=refused.pk).update(created_at=at(10))

    rates = selectors.order_rates(HOUR)

    assert len(rates.served) == 60
    assert rates.served[bucket(at(10))] == 3
    assert rates.served[59] == 1
    assert sum(rates.served) == 4
    assert rates.refused[bucket(at(10))] == 4
    assert rates.limited[bucket(at(10))] == 1
    assert sum(rates.refused) == 4

    day = selectors.order_rates(selectors.window("day", now=NOW))
    assert sum(day.served) == 5 / 5  # five orders in 5-minute buckets: per minute


def test_a_basket_is_one_order_and_its_lines_count_their_units(product, factory):
    other = Product.objects.create(sku="CP-2", name="B", price=100, stock=9, factory=factory)
    box = Basket.objects.create()
    sell(product, quantity=2, left=1, when=at(5), basket=box)
    sell(other, quantity=3, left=6, when=at(5), basket=box)
    sell(product, quantity=1, left=0, when=at(5))

    rates = selectors.order_rates(HOUR)

    assert rates.served[bucket(at(5))] == 2
    assert rates.units[bucket(at(5))] == 6


def test_stock_follows_orders_and_adjustments_and_shows_the_sold_out_period(product):
    sell(product, quantity=2, left=1, when=at(40))
    sell(product, quantity=1, left=0, when=at(30))
    arrival = StockAdjustment.objects.create(
        product=product, reason="arrival", old_quantity=0, new_quantity=10
    )
    StockAdjustment.objects.filter(pk=arrival.pk).update(created_at=at(20))
    Product.objects.filter(pk=product.pk).update(stock=10)

    [series] = selectors.stock(HOUR)

    assert series.sku == product.sku
    assert series.values[: bucket(at(40))] == [3] * bucket(at(40))
    assert series.values[bucket(at(40))] == 1
    assert series.values[bucket(at(30))] == 0
    assert series.values[bucket(at(20))] == 10
    assert series.values[-1] == 10
    assert series.sold_out == [(at(30), at(20))]


def test_a_product_empty_all_window_long_is_sold_out_throughout(product, monkeypatch):
    Product.objects.filter(pk=product.pk).update(stock=0)
    monkeypatch.setattr(selectors.timezone, "now", lambda: NOW)

    [series] = selectors.stock(HOUR)

    assert set(series.values) == {0}
    assert series.sold_out == [(HOUR.start, NOW)]


def test_restock_lead_times_run_from_the_decision_to_the_arrival(product):
    decision = ReorderDecision.objects.create(
        product=product,
        quantity=10,
        mode="adaptive",
        reason="test",
        on_hand=0,
        on_order=0,
        demand_rate=1.0,
        lead_time=40.0,
        reorder_point=5,
    )
    ReorderDecision.objects.filter(pk=decision.pk).update(created_at=at(15))
    restock = RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        decision=decision,
        depletion_key="k",
        status="fulfilled",
        fulfilled_at=at(15) + timedelta(seconds=42.5),
    )

    [lead] = selectors.restock_lead_times(HOUR)

    assert (lead.sku, lead.arrived_at, lead.lead_seconds) == (
        product.sku,
        restock.fulfilled_at,
        42.5,
    )


def test_relay_lag_counts_events_and_sales(product):
    event = OutboxEvent.objects.create(
        topic="stock", event_type="stock.low", body={}, attributes={}, sku=product.sku
    )
    OutboxEvent.objects.filter(pk=event.pk).update(
        created_at=at(5), published_at=at(5) + timedelta(seconds=3)
    )
    sale = sell(product, quantity=1, left=2, when=at(5))
    Order.objects.filter(pk=sale.pk).update(published_at=at(5) + timedelta(seconds=1))

    lag = selectors.relay_lag(HOUR)

    assert lag.worst[bucket(at(5))] == pytest.approx(3.0)
    assert lag.mean[bucket(at(5))] == pytest.approx(2.0)
    assert lag.worst[0] is None


def test_dlq_depth_rises_with_dead_messages_and_falls_with_redrives():
    def failed(name: str, seen: datetime, **changes) -> None:  # type: ignore[no-untyped-def]
        FailedMessage.objects.create(
            fingerprint=name, dlq=settings.SQS_RESTOCK_DLQ, body="{}", first_seen_at=seen, **changes
        )

    failed("old", at(90))
    failed("redriven", at(50), status="redriven", redriven_at=at(25))
    failed("discarded", at(120), status="discarded", discarded_at=at(10))

    depth = selectors.dlq_depth(HOUR)

    restock = depth[settings.SQS_RESTOCK_DLQ]
    assert restock[0] == 2  # "old" and "discarded", dead before the window
    assert restock[bucket(at(50))] == 3
    assert restock[bucket(at(25))] == 2
    assert restock[bucket(at(10))] == 1
    assert restock[-1] == 1
    assert set(depth[settings.SQS_NOTIFY_DLQ]) == {0}


def test_only_staff_see_the_dashboard(client, django_user_model, admin_user):
    assert client.get("/admin/dashboard/").status_code == 302
    customer = django_user_model.objects.create_user(username="jimin", password="x")
    client.force_login(customer)

    response = client.get("/admin/dashboard/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_see_every_chart_for_the_hour_or_the_day(client, admin_user, product):
    client.force_login(admin_user)
    sell(product, quantity=1, left=2, when=timezone.now())

    hour = client.get("/admin/dashboard/")
    day = client.get("/admin/dashboard/?window=day")

    for response in (hour, day):
        assert response.status_code == 200
        page = response.content.decode()
        assert page.count('<svg class="chart"') == 6
        for panel in ("orders", "stock", "sold-out", "restocks", "relay-lag", "dlq"):
            assert f'id="panel-{panel}"' in page
        assert "CP-502101 부산도너츠" in page
    assert '<a href="?window=hour" aria-current="page">' in hour.content.decode()
    assert '<a href="?window=day" aria-current="page">' in day.content.decode()
    assert "5-minute average" in day.content.decode()


def test_an_unknown_window_is_a_clear_400(client, admin_user):
    client.force_login(admin_user)

    response = client.get("/admin/dashboard/?window=week")

    assert response.status_code == 400
    assert response.content.decode() == "window must be one of: hour, day"


def test_the_admin_index_links_to_the_dashboard(client, admin_user):
    client.force_login(admin_user)

    page = client.get("/admin/").content.decode()

    assert 'href="/admin/dashboard/"' in page
    assert 'id="dead-letter-summary"' in page  # the app's own index still shows


def test_staff_see_the_pre_orders_waiting_and_promised(client, admin_user, product, settings):
    settings.EVENTS_ENABLED = False
    Product.objects.filter(pk=product.pk).update(stock=0)
    place_order(sku=product.sku, quantity=2, backorder=True)
    place_order(sku=product.sku, quantity=1, backorder=True)
    client.force_login(admin_user)

    page = client.get("/admin/dashboard/").content.decode()

    assert selectors.pre_orders(selectors.window("hour")) == selectors.PreOrders(
        waiting=2, promised=3, late=0, cancelled=0
    )
    assert '?status__exact=backordered">2</a></strong>pre-orders waiting (3 units promised)' in page
