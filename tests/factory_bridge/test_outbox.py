"""The transactional outbox: orders never wait for SNS, and no committed event is lost."""

import json
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from factory_bridge import aws as aws_clients
from factory_bridge.publishers import InMemoryPublisher, SnsPublisher
from factory_bridge.services import outbox, pollers
from factory_bridge.services.outbox import (
    RelayReport,
    backlog,
    purge_published,
    relay_outbox,
    retry_dead,
)
from inventory import outbox as inventory_outbox
from inventory.models import Product
from nudged.core import leases
from nudged.core.models import OutboxEvent, WorkerLease
from shop.models import Order
from shop.services import place_order
from tests.factory_bridge.sqs import drain

SKU = "CP-502101"
CLOSED_ENDPOINT = "http://127.0.0.1:1"


def event_ids(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(json.loads(m["Body"])["Message"])["event_id"] for m in messages)


def outbox_ids() -> list[str]:
    return sorted(str(pk) for pk in OutboxEvent.objects.values_list("pk", flat=True))


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(json.loads(m["Body"])["Message"]) for m in messages]


def sold(messages: list[dict[str, Any]]) -> list[int]:
    """The order ids of the sales events in `messages`, batches unpacked."""
    return sorted(
        e["order_id"] for b in bodies(messages) if b["type"] == "sales.batch" for e in b["events"]
    )


def order_ids() -> list[int]:
    return sorted(Order.objects.values_list("pk", flat=True))


def pending_events(count: int = 1, *, topic: str = OutboxEvent.Topic.STOCK) -> list[OutboxEvent]:
    """Outbox rows as a stock change writes them, due now."""
    made = []
    for _ in range(count):
        event = OutboxEvent(topic=topic, event_type="stock.low", sku=SKU, body={}, attributes={})
        event.body = {
            "event_id": str(event.pk),
            "type": "stock.low",
            "sku": SKU,
            "factory_id": "FF-500293",
            "quantity": 20,
        }
        event.attributes = {"EventType": "stock.low", "MessageAttributeProductId": SKU}
        event.save()
        made.append(event)
    return made


@pytest.fixture
def sns_calls(aws: str) -> Iterator[list[str]]:
    """Names of the SNS API calls the relay's boto3 client makes."""
    calls: list[str] = []

    def record(model: Any, **kwargs: Any) -> None:
        calls.append(model.name)

    events = aws_clients.client("sns").meta.events
    events.register("before-call.sns", record, unique_id="test-outbox-sns-calls")
    yield calls
    events.unregister("before-call.sns", unique_id="test-outbox-sns-calls")


@pytest.mark.django_db(transaction=True)
def test_orders_during_an_sns_outage_succeed_and_the_sweep_publishes_everything(
    aws, product, settings, monkeypatch
):
    orders = 100
    Product.objects.filter(pk=product.pk).update(stock=orders)
    # As in the web process: django-q2 read Q_CLUSTER at import time, so patch its Conf.
    monkeypatch.setattr(Conf, "SYNC", False)
    settings.OUTBOX_RELAY_DEBOUNCE = 0.05
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT
    client = Client()
    latencies = []

    for _ in range(orders):
        started = time.perf_counter()
        response = client.post(
            "/api/orders/", {"sku": SKU, "quantity": 1}, content_type="application/json"
        )
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.content

    print(
        f"\norder latency during SNS outage: median {statistics.median(latencies) * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms over {orders} orders"
    )
    assert max(latencies) < 1.0
    time.sleep(0.2)  # let the last debounce timer enqueue its relay task
    assert OrmQ.objects.exists(), "orders should have queued a relay task"
    # Every sale, and the depletion and reorder of the last one.
    assert backlog()["pending"] == orders + 2
    assert OutboxEvent.objects.count() == 2
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {0}

    settings.AWS_ENDPOINT_URL = aws
    report = relay_outbox()

    assert (report.published, report.sales, report.failed) == (2, orders, 0)
    # The hundred sales fit one message; the stock events go one per message.
    assert report.sales_messages == 1
    ops = drain(aws, "nudged-ops")
    assert len(ops) == 3
    assert sold(ops) == order_ids()
    stock = [b["event_id"] for b in bodies(ops) if b["type"] != "sales.batch"]
    assert sorted(stock) == outbox_ids()
    assert len(drain(aws, "nudged-restock")) == 2
    assert backlog() == {"pending": 0, "oldest_age_seconds": 0.0, "dead": 0}


def relay_and_time() -> tuple[RelayReport, datetime, datetime]:
    before = timezone.now()
    report = relay_outbox()
    return report, before, timezone.now()


@pytest.mark.django_db
def test_a_failed_publish_records_the_error_and_backs_off(aws, product, settings):
    place_order(sku=SKU, quantity=3)
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT

    report, before, after = relay_and_time()

    # Two stock events and the sale.
    assert (report.published, report.sales, report.failed) == (0, 0, 3)
    for row in OutboxEvent.objects.all():
        assert row.published_at is None
        assert row.attempts == 1
        assert "Could not connect to the endpoint URL" in row.last_error
        # Backoff 2**attempts seconds from the moment the publish failed.
        assert before + timedelta(seconds=2) <= row.next_attempt_at <= after + timedelta(seconds=2)
    assert Order.objects.get().published_at is None

    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    report, before, after = relay_and_time()

    # The stock events were due again; the sales wait out their own backoff.
    assert (report.published, report.failed) == (0, 2)
    for row in OutboxEvent.objects.all():
        assert row.attempts == 2
        assert before + timedelta(seconds=4) <= row.next_attempt_at <= after + timedelta(seconds=4)
    assert backlog()["pending"] == 3

    settings.AWS_ENDPOINT_URL = aws
    assert relay_outbox().sales == 0  # still backing off
    outbox.sales_pace.reset()
    assert relay_outbox().sales == 1
    assert Order.objects.get().published_at is not None


@pytest.mark.django_db
def test_events_are_not_retried_before_their_next_attempt(aws, product, settings):
    place_order(sku=SKU, quantity=3)
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT
    relay_outbox()
    settings.AWS_ENDPOINT_URL = aws

    early = relay_outbox()

    assert (early.published, early.sales, early.failed) == (0, 0, 0)
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    assert drain(aws, "nudged-ops") == []

    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    outbox.sales_pace.reset()
    due = relay_outbox()

    assert (due.published, due.sales, due.failed) == (2, 1, 0)
    for row in OutboxEvent.objects.all():
        assert row.published_at is not None
        assert row.last_error == ""
    ops = drain(aws, "nudged-ops")
    assert sorted(b["event_id"] for b in bodies(ops) if b["type"] != "sales.batch") == outbox_ids()
    assert sold(ops) == order_ids()


@pytest.mark.django_db
def test_several_pending_events_go_out_in_publish_batches(aws, product, sns_calls):
    pending_events(11)

    report = relay_outbox()

    assert (report.published, report.failed) == (11, 0)
    assert sns_calls == ["PublishBatch", "Publish"]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert event_ids(drain(aws, "nudged-ops")) == outbox_ids()


@pytest.mark.django_db
def test_sales_go_out_many_to_a_message_one_product_each(aws, product, sns_calls):
    other = Product.objects.create(
        sku="CP-502102", name="딸기도너츠", price=2500, stock=20, factory=product.factory
    )
    Product.objects.filter(pk=product.pk).update(stock=20)
    for sku in [SKU, other.sku] * 6:
        place_order(sku=sku, quantity=2)

    report = relay_outbox()

    assert (report.published, report.sales, report.sales_messages) == (0, 12, 2)
    assert sns_calls == ["Publish", "Publish"]
    ops = drain(aws, "nudged-ops")
    batches = {b["sku"]: b for b in bodies(ops)}
    assert set(batches) == {SKU, other.sku}
    for sku, batch in batches.items():
        assert batch["type"] == "sales.batch"
        assert batch["count"] == len(batch["events"]) == 6
        mine = Order.objects.filter(product__sku=sku).order_by("pk")
        assert [e["order_id"] for e in batch["events"]] == [o.pk for o in mine]
        for event, order in zip(batch["events"], mine, strict=True):
            assert event["type"] == "order.completed"
            assert (event["sku"], event["quantity"], event["stock"]) == (
                sku,
                2,
                order.remaining_stock,
            )
            assert event["factory_id"] == "FF-500293"
    sent = {m["MessageId"]: json.loads(m["Body"])["MessageAttributes"] for m in ops}
    for attributes in sent.values():
        assert attributes["EventType"]["Value"] == "sales.batch"
        assert attributes["MessageAttributeProductCnt"]["Value"] == "12"
    ids = [e["event_id"] for b in bodies(ops) for e in b["events"]]
    assert len(set(ids)) == 12
    assert not Order.objects.filter(published_at__isnull=True).exists()


def backordered_rows(count: int, *, sku: str = SKU) -> list[OutboxEvent]:
    """Rows of the sales topic as a pre-order writes them, due now."""
    made = []
    for n in range(count):
        event = OutboxEvent(topic=OutboxEvent.Topic.SALES, event_type="order.backordered", sku=sku)
        event.body = {
            "event_id": str(event.pk),
            "type": "order.backordered",
            "sku": sku,
            "factory_id": "FF-500293",
            "quantity": 1,
            "order_id": n,
        }
        event.attributes = {"EventType": "order.backordered", "MessageAttributeProductId": sku}
        event.save()
        made.append(event)
    return made


@pytest.mark.django_db
def test_the_sales_topic_rows_go_out_many_to_a_message_one_product_each(aws, product, sns_calls):
    mine, theirs = backordered_rows(5), backordered_rows(3, sku="CP-502102")

    report = relay_outbox()

    assert (report.published, report.failed, report.sales_messages) == (8, 0, 2)
    assert sns_calls == ["Publish", "Publish"]
    batches = {b["sku"]: b for b in bodies(drain(aws, "nudged-ops"))}
    for sku, rows in [(SKU, mine), ("CP-502102", theirs)]:
        assert batches[sku]["type"] == "sales.batch"
        assert batches[sku]["count"] == len(rows)
        assert [e["event_id"] for e in batches[sku]["events"]] == [str(r.pk) for r in rows]
        assert {e["type"] for e in batches[sku]["events"]} == {"order.backordered"}
    assert set(OutboxEvent.objects.values_list("attempts", "last_error")) == {(1, "")}
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db
def test_a_sales_message_sns_refuses_goes_again_one_event_to_a_message(
    sns_answers, product, settings
):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    bad, good = backordered_rows(2)
    refused = {"service_error_code": "InvalidParameter", "http_status_code": 400}
    sender = {"Type": "Sender"}
    sns_answers.add_client_error("publish", **refused, service_error_meta=sender)  # the batch
    sns_answers.add_client_error("publish", **refused, service_error_meta=sender)  # bad alone
    sns_answers.add_response("publish", {"MessageId": "m-1"})  # good alone

    report = relay_outbox()

    assert (report.published, report.failed, report.dead) == (1, 0, 1)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.dead_at is not None
    assert "InvalidParameter" in bad.last_error
    assert good.published_at is not None
    sns_answers.assert_no_pending_responses()


@pytest.mark.django_db
def test_one_relay_at_a_time_publishes_sales_and_a_dead_ones_lease_goes_stale(aws, product):
    place_order(sku=SKU, quantity=1)
    assert leases.claim(outbox.SALES_LEASE, "another-relay")

    assert relay_outbox().sales == 0

    # The other relay died mid-publish: its lease outlasts the slowest publish, then lapses.
    slowest = outbox.claim_lease(SnsPublisher())
    lease = WorkerLease.objects.filter(name=outbox.SALES_LEASE)
    lease.update(heartbeat_at=timezone.now() - slowest + timedelta(seconds=5))
    assert relay_outbox().sales == 0
    lease.update(heartbeat_at=timezone.now() - slowest - timedelta(seconds=1))
    assert relay_outbox().sales == 1
    assert lease.get().owner == ""


@pytest.mark.django_db
def test_a_sales_batch_too_large_for_one_message_is_split(aws, product, monkeypatch):
    monkeypatch.setattr(outbox, "SALES_MESSAGE_BYTES", 1000)
    Product.objects.filter(pk=product.pk).update(stock=40)
    for _ in range(30):
        place_order(sku=SKU, quantity=1)

    report = relay_outbox()

    assert report.sales == 30
    assert report.sales_messages > 1
    ops = drain(aws, "nudged-ops")
    assert len(ops) == report.sales_messages
    for batch in bodies(ops):
        assert len(json.dumps(batch["events"])) <= 1000
    assert sold(ops) == order_ids()


@pytest.mark.django_db
def test_a_sale_published_again_keeps_its_event_id(aws, product, monkeypatch):
    """A relay that dies between the publish and the mark sends the sale again, same id."""
    from shop.sales import OrderLedger

    place_order(sku=SKU, quantity=1)

    def die(self: Any, **kwargs: Any) -> None:
        raise RuntimeError("relay died")

    with monkeypatch.context() as patch:
        patch.setattr(OrderLedger, "mark_published", die)
        with pytest.raises(RuntimeError):
            relay_outbox()
    relay_outbox()

    ops = [b for b in bodies(drain(aws, "nudged-ops")) if b["type"] == "sales.batch"]
    assert len(ops) == 2
    assert ops[0]["events"] == ops[1]["events"]
    assert Order.objects.get().published_at is not None


@pytest.mark.django_db
def test_without_events_no_sale_is_published(aws, product, settings):
    settings.EVENTS_ENABLED = False
    place_order(sku=SKU, quantity=1)

    report = relay_outbox()

    assert (report.published, report.sales) == (0, 0)
    assert drain(aws, "nudged-ops") == []
    assert Order.objects.get().published_at is None


@pytest.mark.django_db
def test_stock_events_go_out_before_the_sales_events_ahead_of_them(product, settings, monkeypatch):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(outbox, "CLAIM_SIZE", 5)
    Product.objects.filter(pk=product.pk).update(stock=8)
    for _ in range(8):
        place_order(sku=SKU, quantity=1)  # the last one empties the product

    report = relay_outbox()

    assert (report.published, report.sales) == (2, 8)
    types = [message.body["type"] for _, message in InMemoryPublisher.sent]
    assert types == ["stock.depleted", "stock.low", "sales.batch"]
    [(_, sales)] = InMemoryPublisher.sent[2:]
    assert [e["order_id"] for e in sales.body["events"]] == order_ids()


@pytest.fixture
def relay_clock(monkeypatch: pytest.MonkeyPatch) -> "RelayClock":
    """The relay's clock, standing still but for its own pauses, which it records."""
    clock = RelayClock()
    monkeypatch.setattr(outbox, "monotonic", lambda: clock.now)
    monkeypatch.setattr(outbox, "sleep", clock.pause)
    return clock


class RelayClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 3))
        self.now += seconds


@pytest.mark.django_db
def test_the_sales_lane_lets_sales_gather_for_an_interval(
    product, settings, monkeypatch, relay_clock
):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    settings.OUTBOX_SALES_INTERVAL = 0.5
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    Product.objects.filter(pk=product.pk).update(stock=50)
    place_order(sku=SKU, quantity=1)
    place_order(sku=SKU, quantity=1)

    assert outbox.sales_lane(until=100.1).sales == 2
    place_order(sku=SKU, quantity=1)
    place_order(sku=SKU, quantity=1)
    assert outbox.sales_lane(until=100.3).sales == 0  # not due: pauses until the round ends
    place_order(sku=SKU, quantity=1)
    assert outbox.sales_lane(until=100.7).sales == 3  # due at 100.5: the three in one message

    assert relay_clock.pauses == [0.1, 0.2, 0.2, 0.2]
    assert [m.body["count"] for _, m in InMemoryPublisher.sent] == [2, 3]


@pytest.mark.django_db
def test_the_sales_interval_counts_from_the_start_of_the_last_drain(
    product, settings, monkeypatch, relay_clock
):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    settings.OUTBOX_SALES_INTERVAL = 0.5
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    publish = InMemoryPublisher.publish

    def slow_publish(self, **kwargs):  # type: ignore[no-untyped-def]
        relay_clock.now += 0.3
        return publish(self, **kwargs)

    monkeypatch.setattr(InMemoryPublisher, "publish", slow_publish)
    Product.objects.filter(pk=product.pk).update(stock=50)
    place_order(sku=SKU, quantity=1)

    assert outbox.sales_lane(until=100.6).sales == 1

    # The drain took 100.0–100.3; the next is due at 100.5, not half a second after it ended.
    assert relay_clock.pauses == [0.2, 0.1]


@pytest.mark.django_db
def test_stock_events_do_not_wait_for_the_sales_interval(product, settings, monkeypatch):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    settings.OUTBOX_SALES_INTERVAL = 60
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(outbox, "sleep", lambda seconds: None)
    Product.objects.filter(pk=product.pk).update(stock=50)
    place_order(sku=SKU, quantity=1)
    assert outbox.sales_lane(until=time.monotonic() + 0.01).sales == 1  # then a minute's pause
    assert [m.body["type"] for _, m in InMemoryPublisher.sent] == ["sales.batch"]

    place_order(sku=SKU, quantity=49)  # the product's last units

    assert outbox.stock_lane(until=time.monotonic()).published == 2
    assert outbox.sales_lane(until=time.monotonic() + 0.01).sales == 0
    types = [m.body["type"] for _, m in InMemoryPublisher.sent[1:]]
    assert types == ["stock.depleted", "stock.low"]
    # The loop's sales lane is paced; a relay task (the fallback without the loop) is not.
    assert relay_outbox().sales == 1


@pytest.mark.django_db
def test_the_stock_lane_goes_straight_on_while_a_backlog_is_due(
    product, settings, monkeypatch, relay_clock
):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(outbox, "CLAIM_SIZE", 2)
    pending_events(3)

    # A full claim, then the last event without a pause; a pause only once none is due, and
    # no longer than the round has left.
    assert outbox.stock_lane(until=100.1).published == 3

    assert relay_clock.pauses == [0.1]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


class HeldSalesPublisher(InMemoryPublisher):
    """Publishes stock events at once; a sales publish waits until the test lets it go."""

    release = threading.Event()
    waiting = threading.Event()

    def publish(self, **kwargs: Any) -> list:  # type: ignore[override]
        if kwargs["topic"] == OutboxEvent.Topic.SALES:
            self.waiting.set()
            assert self.release.wait(timeout=30), "the test never let the sales publish go"
        return super().publish(**kwargs)


@pytest.mark.django_db(transaction=True)
def test_the_relay_loop_publishes_a_stock_event_while_sales_publishing_is_stuck(
    product, settings, monkeypatch
):
    settings.EVENT_PUBLISHER = "tests.factory_bridge.test_outbox.HeldSalesPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(HeldSalesPublisher, "release", threading.Event())
    monkeypatch.setattr(HeldSalesPublisher, "waiting", threading.Event())
    monkeypatch.setattr(Conf, "SYNC", False)  # commits queue tasks; the loop alone publishes
    monkeypatch.setattr(outbox, "SALES_CLAIM_SIZE", 50)
    Product.objects.filter(pk=product.pk).update(stock=1000)
    for _ in range(200):
        place_order(sku=SKU, quantity=1)  # a backlog of sales: four claims of them

    def loop() -> None:
        try:
            pollers.run_poller(name="outbox", seconds=4, handover=False)
        finally:
            connection.close()

    relay = threading.Thread(target=loop)
    relay.start()
    try:
        assert HeldSalesPublisher.waiting.wait(timeout=10)
        [stock_event] = pending_events()  # committed while the sales lane is stuck in a publish

        published = wait_for(lambda: OutboxEvent.objects.get(pk=stock_event.pk).published_at)

        assert published is not None, "the stock event waited behind the sales"
        assert not Order.objects.filter(published_at__isnull=False).exists()
        assert [m.body["event_id"] for _, m in InMemoryPublisher.sent] == [str(stock_event.pk)]
    finally:
        HeldSalesPublisher.release.set()
        relay.join(timeout=30)
    assert not relay.is_alive()
    assert Order.objects.filter(published_at__isnull=True).count() < 200


def wait_for(read: Any, seconds: float = 5.0) -> Any:
    """What `read` returns once it is truthy, or its last answer after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.django_db(transaction=True)
def test_concurrent_relays_publish_each_event_once(aws, product, monkeypatch):
    events, relays = 30, 6
    monkeypatch.setattr(Conf, "SYNC", False)  # orders only enqueue: their events stay pending
    Product.objects.filter(pk=product.pk).update(stock=100)
    for _ in range(events):
        place_order(sku=SKU, quantity=1)
    start = threading.Barrier(relays)

    def relay(_: int) -> RelayReport:
        try:
            start.wait(timeout=10)
            return relay_outbox()
        finally:
            connection.close()

    pending_events(events)

    with ThreadPoolExecutor(max_workers=relays) as pool:
        reports = list(pool.map(relay, range(relays)))

    assert sum(r.published for r in reports) == events
    assert sum(r.sales for r in reports) == events
    assert sum(r.failed for r in reports) == 0
    assert backlog()["pending"] == 0
    ops = drain(aws, "nudged-ops")
    assert sorted(b["event_id"] for b in bodies(ops) if b["type"] != "sales.batch") == outbox_ids()
    assert sold(ops) == order_ids()


@pytest.mark.django_db(transaction=True)
def test_the_relay_loop_publishes_what_commits_and_stops_the_per_commit_tasks(
    aws, product, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(inventory_outbox, "_loop_seen_until", 0.0)
    Product.objects.filter(pk=product.pk).update(stock=20)
    for _ in range(5):
        place_order(sku=SKU, quantity=1)

    rounds = pollers.run_poller(name="outbox", seconds=1.5, handover=False)

    assert rounds >= 1
    assert backlog()["pending"] == 0
    assert sold(drain(aws, "nudged-ops")) == order_ids()

    # While the loop's lease is fresh, a commit queues no relay task of its own.
    assert leases.claim("outbox", "someone-else")
    queued = OrmQ.objects.count()
    inventory_outbox.trigger_relay()
    assert OrmQ.objects.count() == queued


# --- events SNS refuses, dead events


def refused_event(**fields: Any) -> OutboxEvent:
    """An event SNS refuses whenever it is sent: one of its message attributes is empty."""
    return OutboxEvent.objects.create(
        topic=OutboxEvent.Topic.STOCK,
        event_type="stock.low",
        body={"type": "stock.low", "sku": SKU},
        attributes={"MessageAttributeEventType": "stock.low", "MessageAttributeNote": ""},
        sku=SKU,
        created_at=timezone.now() - timedelta(seconds=1),
        **fields,
    )


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def relay_when_due() -> RelayReport:
    """Relay as the sweep would once every event's back-off has passed."""
    OutboxEvent.objects.filter(published_at__isnull=True).update(next_attempt_at=timezone.now())
    return relay_outbox()


@pytest.mark.django_db
def test_an_event_sns_always_refuses_dies_after_the_maximum_attempts(
    aws, product, settings, caplog
):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    bad = refused_event()
    [good] = pending_events()

    # Both go in one PublishBatch, which SNS refuses as a whole; sent one by one, the good
    # event goes out and only the bad one counts a failure.
    first = relay_outbox()
    assert (first.published, first.failed, first.dead) == (1, 1, 0)
    assert event_ids(drain(aws, "nudged-ops")) == [str(good.pk)]
    bad.refresh_from_db()
    assert bad.attempts == 1
    assert "InvalidParameter" in bad.last_error
    assert bad.next_attempt_at > timezone.now()
    assert bad.dead_at is None

    second = relay_when_due()
    assert (second.failed, second.dead) == (1, 0)
    caplog.clear()
    third = relay_when_due()

    assert (third.published, third.failed, third.dead) == (0, 0, 1)
    bad.refresh_from_db()
    assert bad.attempts == 3
    assert bad.dead_at is not None
    assert bad.published_at is None
    [record] = errors(caplog)
    assert f"id={bad.pk} type=stock.low sku={SKU} attempts=3" in record.getMessage()
    assert "InvalidParameter" in record.getMessage()
    assert backlog()["dead"] == 1
    assert backlog()["pending"] == 0

    # Dead events are no longer claimed, however long they wait.
    caplog.clear()
    later = relay_when_due()
    assert (later.published, later.failed, later.dead) == (0, 0, 0)
    bad.refresh_from_db()
    assert bad.attempts == 3
    assert errors(caplog) == []
    assert drain(aws, "nudged-ops") == []


@pytest.mark.django_db
def test_a_missing_topic_kills_events_and_retrying_them_after_the_fix_publishes_them(
    aws, product, settings
):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    pending_events(topic=OutboxEvent.Topic.SALES)
    settings.SNS_SALES_TOPIC = "nudged-no-such-topic"

    assert relay_outbox().failed == 1
    assert relay_when_due().dead == 1
    [event] = OutboxEvent.objects.all()
    assert event.dead_at is not None
    assert "NotFound" in event.last_error

    settings.SNS_SALES_TOPIC = "nudged-sales-events"
    revived = retry_dead(ids=[event.pk])

    # Tests run tasks inline: the retry's relay task has already published it.
    assert [e.pk for e in revived] == [event.pk]
    event.refresh_from_db()
    assert event.dead_at is None
    assert event.published_at is not None
    [batch] = bodies(drain(aws, "nudged-ops"))
    assert [e["event_id"] for e in batch["events"]] == [str(event.pk)]
    assert retry_dead(ids=[event.pk]) == []


@pytest.mark.django_db
def test_events_wait_without_dying_while_sns_cannot_be_reached(aws, product, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    pending_events()
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT

    for _ in range(4):
        report = relay_when_due()
        assert (report.failed, report.dead) == (1, 0)

    [event] = OutboxEvent.objects.all()
    assert event.attempts == 4
    assert event.dead_at is None
    assert backlog()["dead"] == 0
    settings.AWS_ENDPOINT_URL = aws
    assert relay_when_due().published == 1


@pytest.fixture
def sns_answers(aws: str) -> Iterator[Stubber]:
    """SNS answers queued by the test, for refusals moto does not make."""
    aws_clients.account_id()  # the topic's ARN needs it; asked of STS, not stubbed
    with Stubber(aws_clients.client("sns")) as stubber:
        yield stubber


@pytest.mark.django_db
def test_an_entry_sns_refuses_in_a_batch_dies_and_the_others_go_out(sns_answers, product, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    bad, good = pending_events(2)
    sns_answers.add_response(
        "publish_batch",
        {
            "Successful": [{"Id": good.pk.hex, "MessageId": "m-1"}],
            "Failed": [
                {
                    "Id": bad.pk.hex,
                    "Code": "InvalidParameter",
                    "Message": "bad attribute",
                    "SenderFault": True,
                }
            ],
        },
    )

    report = relay_outbox()

    assert (report.published, report.failed, report.dead) == (1, 0, 1)
    bad.refresh_from_db()
    assert bad.dead_at is not None
    assert bad.last_error == "InvalidParameter: bad attribute"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "status"),
    [("Throttled", 400), ("ThrottlingException", 429), ("InvalidClientTokenId", 403)],
)
def test_events_sns_asks_to_send_later_do_not_die(sns_answers, product, settings, code, status):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    pending_events()
    sns_answers.add_client_error("publish", service_error_code=code, http_status_code=status)

    report = relay_outbox()

    assert (report.failed, report.dead) == (1, 0)
    [event] = OutboxEvent.objects.all()
    assert event.dead_at is None
    assert code in event.last_error


# --- the claim lease


def test_the_claim_lease_outlasts_the_slowest_publish_call(aws):
    config = aws_clients.client("sns").meta.config
    attempts = config.retries["total_max_attempts"]
    # botocore's standard retry pauses at most 1, 2, 4 ... (20) seconds between attempts.
    pauses = sum(min(2 ** (n - 1), 20) for n in range(1, attempts))
    slowest_call = attempts * (config.connect_timeout + config.read_timeout) + pauses
    # The first publish of a process also asks STS for the account id of the topic's ARN.
    slowest_publish = 2 * slowest_call

    assert slowest_publish == 2 * (3 * 27 + 3)
    assert outbox.claim_lease(SnsPublisher()).total_seconds() > slowest_publish


class SlowPublisher(InMemoryPublisher):
    """Each call takes the longest time it may take, on the relay's clock."""

    max_publish_seconds = 100.0
    clock = [0.0]

    def publish(self, **kwargs: Any) -> list:  # type: ignore[override]
        self.clock[0] += self.max_publish_seconds
        return super().publish(**kwargs)


@pytest.mark.django_db
def test_a_relay_starts_no_call_its_lease_could_not_cover_and_hands_the_rest_back(
    product, settings, monkeypatch
):
    settings.EVENT_PUBLISHER = "tests.factory_bridge.test_outbox.SlowPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(SlowPublisher, "clock", [0.0])
    monkeypatch.setattr(outbox, "monotonic", lambda: SlowPublisher.clock[0])
    pending_events(25)

    report = relay_outbox(seconds=1)

    # One call of ten fitted in the lease; the other fifteen events are due again at once,
    # not hidden until the lease ends.
    assert report.published == 10
    assert len(InMemoryPublisher.sent) == 10
    assert not report.drained
    now = timezone.now()
    waiting = OutboxEvent.objects.filter(published_at__isnull=True)
    assert waiting.count() == 15
    assert all(e.next_attempt_at <= now and e.attempts == 0 for e in waiting)


# --- purging published events


@pytest.mark.django_db
def test_the_purge_deletes_only_old_published_events_in_batches(product, settings):
    settings.OUTBOX_RETENTION_DAYS = 7
    now = timezone.now()

    def event(sku: str, *, published_days_ago: float | None, dead: bool = False) -> OutboxEvent:
        published = None if published_days_ago is None else now - timedelta(published_days_ago)
        return OutboxEvent.objects.create(
            topic=OutboxEvent.Topic.SALES,
            event_type="order.completed",
            body={},
            attributes={},
            sku=sku,
            created_at=now - timedelta(days=30),
            published_at=published,
            dead_at=now - timedelta(days=20) if dead else None,
        )

    old = [event("OLD", published_days_ago=8) for _ in range(5)]
    kept = [
        event("RECENT", published_days_ago=6),
        event("PENDING", published_days_ago=None),
        event("DEAD", published_days_ago=None, dead=True),
    ]

    with CaptureQueriesContext(connection) as queries:
        deleted = purge_published(batch_size=2)

    assert deleted == len(old)
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {e.pk for e in kept}


@pytest.mark.parametrize("name", ["OUTBOX_MAX_ATTEMPTS", "OUTBOX_RETENTION_DAYS"])
def test_outbox_limits_below_one_fail_the_system_check(settings, name):
    setattr(settings, name, 0)

    with pytest.raises(SystemCheckError, match=f"{name} is 0; it must be at least 1"):
        call_command("check")
