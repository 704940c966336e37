"""Pre-orders: promised from a batch in production, served when it lands, moved or cancelled."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from inventory import promises
from inventory.alerts import send_due_mail
from inventory.models import DemandSnapshot, Product, Promise, ReorderDecision, SuppressedAddress
from inventory.services import batch_accepted, give_up_batch, receive_stock, refresh_estimates
from nudged.core.models import OutboxEvent
from shop.exceptions import OutOfStock, PurchaseLimitReached
from shop.models import Order
from shop.services import place_order

SKU = "CP-502101"


@pytest.fixture
def empty(product: Product) -> Product:
    """Sold out, nothing on order; a new batch is 10 units whatever demand says."""
    Product.objects.filter(pk=product.pk).update(
        stock=0, min_order_quantity=10, max_order_quantity=10
    )
    product.refresh_from_db()
    return product


def backorder(quantity: int, **kwargs: object) -> Order:
    result = place_order(sku=SKU, quantity=quantity, backorder=True, **kwargs)
    return Order.objects.get(pk=result.order_id)


def arrive(batch: ReorderDecision | None, quantity: int = 10) -> Product:
    with transaction.atomic():
        return receive_stock(
            product_id=batch.product_id if batch else Product.objects.get().pk,
            quantity=quantity,
            note="arrival",
            batch_id=batch.pk if batch else None,
        )


def batch_of(order: Order) -> ReorderDecision:
    return Promise.objects.get(order=order).batch


def state(order: Order) -> str:
    order.refresh_from_db()
    return order.status


@pytest.mark.usefixtures("no_events")
def test_a_backorder_on_a_sold_out_donut_is_promised_from_a_new_batch(empty):
    order = backorder(2)

    assert order.status == Order.Status.BACKORDERED
    batch = ReorderDecision.objects.get()
    assert (batch.quantity, batch.promised) == (10, 2)
    assert order.promise.batch == batch
    assert order.promise.ready_by == batch.due_at + promises.margin(batch.lead_time)
    expected = batch.created_at + timedelta(seconds=batch.lead_time)
    assert abs(batch.due_at - expected) < timedelta(seconds=1)
    empty.refresh_from_db()
    assert (empty.stock, empty.on_order, empty.promised) == (0, 10, 2)
    # Not a refusal: the refusal counters and refused demand stay as they were.
    assert (empty.orders_refused, empty.units_refused) == (0, 0)


@pytest.mark.usefixtures("no_events")
def test_backorders_share_the_batch_due_first_and_a_full_one_opens_the_next(empty):
    first, second, third = backorder(4), backorder(5), backorder(3)

    assert batch_of(first) == batch_of(second) != batch_of(third)
    assert [b.promised for b in ReorderDecision.objects.order_by("pk")] == [9, 3]
    empty.refresh_from_db()
    assert (empty.on_order, empty.promised) == (20, 12)


@pytest.mark.usefixtures("no_events")
def test_a_backorder_the_shelf_can_serve_is_an_ordinary_sale(product):
    order = backorder(2)

    assert order.status == Order.Status.COMPLETED
    assert order.promise is None


@pytest.mark.usefixtures("no_events")
def test_a_backorder_production_cannot_serve_is_refused_and_counted(empty):
    Product.objects.filter(pk=empty.pk).update(reorder_ceiling=1)

    with pytest.raises(OutOfStock):
        backorder(2)

    empty.refresh_from_db()
    # The refusal still decides what the policy asks for (1 unit, the ceiling); none promised.
    assert (empty.on_order, empty.promised, empty.orders_refused) == (1, 0, 1)
    assert not Order.objects.exists()


@pytest.mark.usefixtures("no_events")
def test_a_batch_serves_its_waiting_orders_oldest_first_and_the_shelf_the_rest(empty):
    first = backorder(4)
    bigger = backorder(7)  # 6 left in the first batch: the second batch
    small, smallest = backorder(3), backorder(1)
    batch, later = ReorderDecision.objects.order_by("pk")

    arrived = arrive(batch)

    assert [state(o) for o in (first, small, smallest)] == [Order.Status.COMPLETED] * 3
    # Larger than the 2 units left over: it waits for its own batch.
    assert state(bigger) == Order.Status.BACKORDERED
    assert (arrived.stock, arrived.on_order, arrived.promised) == (2, 10, 7)
    first.refresh_from_db()
    assert first.fulfilled_at is not None

    arrived = arrive(later)

    assert state(bigger) == Order.Status.COMPLETED
    assert (arrived.stock, arrived.on_order, arrived.promised) == (5, 0, 0)


@pytest.mark.usefixtures("no_events")
def test_units_nobody_was_promised_serve_older_orders_of_another_batch(empty):
    first = backorder(4)
    bigger = backorder(7)
    small, smallest = backorder(3), backorder(1)
    batch, later = ReorderDecision.objects.order_by("pk")

    # The later batch lands first: its own order, then 3 spare units, oldest first, each
    # whole: 4 do not fit, 3 do, then none are left.
    arrived = arrive(later)

    assert [state(o) for o in (first, bigger, small, smallest)] == [
        Order.Status.BACKORDERED,
        Order.Status.COMPLETED,
        Order.Status.COMPLETED,
        Order.Status.BACKORDERED,
    ]
    batch.refresh_from_db()
    assert batch.promised == 5
    assert (arrived.stock, arrived.on_order, arrived.promised) == (0, 10, 5)

    arrived = arrive(batch)

    assert state(first) == state(smallest) == Order.Status.COMPLETED
    assert (arrived.stock, arrived.on_order, arrived.promised) == (5, 0, 0)


def test_production_giving_up_cancels_the_orders_it_cannot_move(empty, settings):
    order = backorder(2)
    batch = batch_of(order)

    with transaction.atomic():
        Product.objects.select_for_update().get(pk=empty.pk)
        give_up_batch(product_id=empty.pk, batch_id=batch.pk, quantity=batch.quantity)

    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.promise.state == Promise.State.CANCELLED
    assert order.promise.reason == promises.GIVEN_UP
    # Cancelled orders are no sales: marked published, their event says what happened.
    assert order.published_at is not None
    empty.refresh_from_db()
    assert (empty.on_order, empty.promised) == (0, 0)
    kinds = list(OutboxEvent.objects.values_list("event_type", flat=True).order_by("created_at"))
    assert "order.backordered" in kinds
    [cancelled] = OutboxEvent.objects.filter(event_type="order.cancelled")
    body = cancelled.body
    assert (body["order_id"], body["reason"], body["quantity"]) == (order.pk, promises.GIVEN_UP, 2)


@pytest.mark.usefixtures("no_events")
def test_a_promise_too_large_for_the_batch_due_next_is_cancelled(empty):
    first = backorder(8)
    second = backorder(5)  # 2 left in the first batch: a second one, due right after
    batch, _ = ReorderDecision.objects.order_by("pk")

    with transaction.atomic():
        Product.objects.select_for_update().get(pk=empty.pk)
        give_up_batch(product_id=empty.pk, batch_id=batch.pk, quantity=batch.quantity)

    # 8 do not fit the 5 left in the later batch: cancelled.
    assert state(first) == Order.Status.CANCELLED
    assert state(second) == Order.Status.BACKORDERED


@pytest.mark.usefixtures("no_events")
def test_a_promise_moved_keeps_waiting_and_is_served_by_its_new_batch(empty):
    first = backorder(3)
    Product.objects.filter(pk=empty.pk).update(min_order_quantity=15, max_order_quantity=15)
    second = backorder(8)  # 7 left in the first: a second batch of 15, 7 of them spare
    batch, later = ReorderDecision.objects.order_by("pk")
    old_time = Promise.objects.get(order=first).ready_by

    with transaction.atomic():
        Product.objects.select_for_update().get(pk=empty.pk)
        give_up_batch(product_id=empty.pk, batch_id=batch.pk, quantity=batch.quantity)

    moved = Promise.objects.get(order=first)
    assert state(first) == Order.Status.BACKORDERED
    assert moved.batch == later
    assert moved.ready_by == promises.ready_by(later) >= old_time
    later.refresh_from_db()
    assert later.promised == 11
    empty.refresh_from_db()
    assert (empty.on_order, empty.promised) == (15, 11)

    arrived = arrive(later, quantity=15)

    assert state(first) == state(second) == Order.Status.COMPLETED
    assert (arrived.stock, arrived.on_order, arrived.promised) == (4, 0, 0)


@pytest.mark.usefixtures("no_events")
def test_a_promise_late_beyond_its_margin_is_cancelled_when_no_batch_is_due_in_time(empty):
    order = backorder(2)
    Promise.objects.update(ready_by=timezone.now() - timedelta(seconds=1))

    assert promises.settle_late() == 1

    assert state(order) == Order.Status.CANCELLED
    assert order.promise.reason == promises.LATE
    assert promises.settle_late() == 0
    batch = ReorderDecision.objects.get()
    assert batch.promised == 0
    # The batch may still come: its units go to the shelf then.
    assert arrive(batch).stock == 10


@pytest.mark.usefixtures("no_events")
def test_purchase_limits_count_waiting_orders_and_not_cancelled_ones(empty, settings):
    settings.PURCHASE_LIMIT = 3
    backorder(2, customer="alice")

    with pytest.raises(PurchaseLimitReached) as limited:
        backorder(2, customer="alice")

    assert limited.value.bought == 2
    assert Promise.objects.count() == 1
    empty.refresh_from_db()
    assert empty.promised == 2
    Promise.objects.update(ready_by=timezone.now() - timedelta(seconds=1))
    promises.settle_late()
    assert backorder(3, customer="alice").status == Order.Status.BACKORDERED


@pytest.mark.usefixtures("no_events")
def test_the_policy_orders_promised_units_one_for_one(empty, settings):
    # An adaptive product with a reorder point of 4: the free units (on hand and on order,
    # less promised) fall below it as soon as a promise takes a batch's units.
    Product.objects.filter(pk=empty.pk).update(reorder_point=4, max_order_quantity=50)
    backorder(3)
    batch = ReorderDecision.objects.get()
    empty.refresh_from_db()
    # 0 on hand + 0 on order - 3 promised, up to 4 (+ no review demand at rate 0): 7, but the
    # minimum order is 10.
    assert (batch.quantity, empty.on_order, empty.promised) == (10, 10, 3)


@pytest.mark.usefixtures("no_events")
def test_promised_units_are_not_guessed_demand_too(empty):
    refresh_estimates()  # the first look: counters from here on
    for _ in range(5):
        backorder(2)
    Product.objects.filter(pk=empty.pk).update(stock=3)
    place_order(sku=SKU, quantity=1)

    refresh_estimates()

    empty.refresh_from_db()
    # 10 units promised are ordered one for one; only the shelf's one unit is a guess.
    assert (empty.promised, empty.units_sold) == (10, 1)
    snapshot = DemandSnapshot.objects.get(product=empty)
    assert snapshot.units_sold == 1


def test_the_ops_feed_hears_of_the_pre_order_once_and_of_its_sale_when_served(empty):
    order = backorder(2)
    ledger_orders = _unpublished_order_ids()
    assert order.pk not in ledger_orders
    [event] = OutboxEvent.objects.filter(event_type="order.backordered")
    body = event.body
    assert body["order_id"] == order.pk
    assert body["ready_by"] == order.promise.ready_by.isoformat()

    arrive(batch_of(order))

    assert order.pk in _unpublished_order_ids()


def _unpublished_order_ids() -> list[int]:
    from shop.sales import OrderLedger

    return [sale.order_id for sale in OrderLedger().unpublished(limit=100)]


@pytest.mark.usefixtures("no_events")
class TestReceipt:
    @pytest.fixture
    def api(self) -> APIClient:
        return APIClient()

    def test_a_pre_order_over_the_api_answers_its_promise(self, api, empty):
        response = api.post(
            "/api/orders/",
            {"sku": SKU, "quantity": 2, "backorder": True, "email": "a@example.com"},
            format="json",
        )

        assert response.status_code == 201
        body = response.json()
        order = Order.objects.get()
        assert body["status"] == "backordered"
        assert body["ready_by"] == order.promise.ready_by.isoformat().replace("+00:00", "Z")
        assert order.promise.email == "a@example.com"

    def test_without_the_flag_a_sold_out_donut_answers_409(self, api, empty):
        response = api.post("/api/orders/", {"sku": SKU, "quantity": 2}, format="json")

        assert response.status_code == 409
        assert not Promise.objects.exists()

    def test_a_pre_order_with_a_bad_email_is_refused(self, api, empty):
        body = {"sku": SKU, "quantity": 1, "backorder": True, "email": "not-an-address"}

        response = api.post("/api/orders/", body, format="json")

        assert response.status_code == 400
        assert "email" in response.json()["errors"]
        assert not Promise.objects.exists()

    def test_an_email_is_kept_only_with_a_pre_order(self, api, product):
        body = {"sku": SKU, "quantity": 1, "backorder": True, "email": "a@example.com"}

        response = api.post("/api/orders/", body, format="json")

        assert response.json()["status"] == "completed"
        assert Order.objects.get().promise is None

    def test_the_receipt_reads_waiting_then_ready(self, api, empty):
        order = backorder(2)
        url = f"/api/orders/{order.reference}/"

        waiting = api.get(url).json()
        arrive(batch_of(order))
        ready = api.get(url).json()

        assert waiting["status"] == "backordered"
        assert waiting["ready_by"] == order.promise.ready_by.isoformat().replace("+00:00", "Z")
        assert waiting["fulfilled_at"] is None
        assert ready["status"] == "completed"
        assert ready["ready_by"] == waiting["ready_by"]
        assert ready["fulfilled_at"] is not None

    def test_the_receipt_reads_cancelled_with_its_reason(self, api, empty):
        order = backorder(2)
        Promise.objects.update(ready_by=timezone.now() - timedelta(seconds=1))
        promises.settle_late()

        cancelled = api.get(f"/api/orders/{order.reference}/").json()

        assert cancelled["status"] == "cancelled"
        assert cancelled["cancel_reason"] == promises.LATE

    def test_the_receipt_page_says_ready_by(self, client, empty):
        order = backorder(2)

        page = client.get(f"/orders/{order.reference}/")

        assert page.status_code == 200
        assert b"Ready by" in page.content
        assert b"receipt.js" in page.content


@pytest.mark.usefixtures("no_events")
def test_a_pre_order_with_an_email_hears_once_that_it_is_ready(empty, mailoutbox):
    order = backorder(2, email="a@example.com")
    backorder(1)  # no address: no email
    assert send_due_mail() == 0

    arrive(batch_of(order))

    assert send_due_mail() == 1
    assert send_due_mail() == 0
    [sent] = mailoutbox
    assert sent.to == ["a@example.com"]
    assert sent.subject == "Your 부산도너츠 is ready"


@pytest.mark.usefixtures("no_events")
def test_a_cancelled_pre_order_hears_why(empty, mailoutbox):
    backorder(2, email="a@example.com")
    Promise.objects.update(ready_by=timezone.now() - timedelta(seconds=1))
    promises.settle_late()

    assert send_due_mail() == 1

    [sent] = mailoutbox
    assert sent.subject == "Your pre-order of 부산도너츠 was cancelled"
    assert promises.LATE in sent.body


@pytest.mark.usefixtures("no_events")
def test_a_suppressed_mailbox_gets_no_pre_order_notice(empty, mailoutbox):
    SuppressedAddress.objects.create(mailbox="a@example.com", reason="unsubscribed")
    order = backorder(2, email="A+shop@example.com")
    arrive(batch_of(order))

    assert send_due_mail() == 0
    assert mailoutbox == []


@pytest.mark.usefixtures("no_events")
def test_a_batch_already_late_promises_nothing_more_and_a_new_one_is_decided(empty):
    first = backorder(2)
    late = batch_of(first)
    ReorderDecision.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(seconds=1))

    second = backorder(2)

    assert batch_of(second) != late
    late.refresh_from_db()
    assert late.promised == 2
    assert Promise.objects.get(order=second).ready_by > timezone.now()


@pytest.mark.usefixtures("no_events")
def test_a_batch_accepted_too_late_for_its_promises_moves_or_cancels_them_at_once(empty):
    order = backorder(2)
    batch = batch_of(order)
    # The factory refused it a few times: accepted now, it is due after the time promised.
    late = Promise.objects.get(order=order).ready_by + timedelta(seconds=30)

    batch_accepted(batch_id=batch.pk, at=late, lead_time=40.0)

    assert state(order) == Order.Status.CANCELLED
    empty.refresh_from_db()
    batch.refresh_from_db()
    assert (empty.promised, batch.promised) == (0, 0)


@pytest.mark.usefixtures("no_events")
def test_a_batch_accepted_in_time_keeps_its_promises(empty):
    order = backorder(2)

    batch_accepted(batch_id=batch_of(order).pk, at=timezone.now(), lead_time=1.0)

    assert state(order) == Order.Status.BACKORDERED
