"""The transactional outbox: orders never wait for SNS, and no committed event is lost."""

import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from factory_bridge import aws as aws_clients
from factory_bridge.models import OutboxEvent
from factory_bridge.publishers import InMemoryPublisher
from factory_bridge.services import outbox
from factory_bridge.services.outbox import RelayReport, backlog, relay_outbox
from inventory.models import Product
from shop.models import Order
from shop.services import place_order
from tests.factory_bridge.sqs import drain, messages_in

SKU = "CP-502101"
CLOSED_ENDPOINT = "http://127.0.0.1:1"


def event_ids(messages: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(json.loads(m["Body"])["Message"])["event_id"] for m in messages)


def outbox_ids() -> list[str]:
    return sorted(str(pk) for pk in OutboxEvent.objects.values_list("pk", flat=True))


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
    assert backlog()["pending"] == orders + 1
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {0}

    settings.AWS_ENDPOINT_URL = aws
    report = relay_outbox()

    assert (report.published, report.failed) == (orders + 1, 0)
    ops = drain(aws, "nudged-ops")
    assert len(ops) == OutboxEvent.objects.count() == orders + 1
    assert event_ids(ops) == outbox_ids()
    assert len(drain(aws, "nudged-restock")) == 1
    assert backlog() == {"pending": 0, "oldest_age_seconds": 0.0}


def relay_and_time() -> tuple[RelayReport, datetime, datetime]:
    before = timezone.now()
    report = relay_outbox()
    return report, before, timezone.now()


@pytest.mark.django_db
def test_a_failed_publish_records_the_error_and_backs_off(aws, product, settings):
    place_order(sku=SKU, quantity=3)
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT

    report, before, after = relay_and_time()

    assert (report.published, report.failed) == (0, 2)
    for row in OutboxEvent.objects.all():
        assert row.published_at is None
        assert row.attempts == 1
        assert "Could not connect to the endpoint URL" in row.last_error
        # Backoff 2**attempts seconds from the moment the publish failed.
        assert before + timedelta(seconds=2) <= row.next_attempt_at <= after + timedelta(seconds=2)

    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    report, before, after = relay_and_time()

    assert (report.published, report.failed) == (0, 2)
    for row in OutboxEvent.objects.all():
        assert row.attempts == 2
        assert before + timedelta(seconds=4) <= row.next_attempt_at <= after + timedelta(seconds=4)
    assert backlog()["pending"] == 2


@pytest.mark.django_db
def test_events_are_not_retried_before_their_next_attempt(aws, product, settings):
    place_order(sku=SKU, quantity=3)
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT
    relay_outbox()
    settings.AWS_ENDPOINT_URL = aws

    early = relay_outbox()

    assert (early.published, early.failed) == (0, 0)
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    assert drain(aws, "nudged-ops") == []

    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    due = relay_outbox()

    assert (due.published, due.failed) == (2, 0)
    for row in OutboxEvent.objects.all():
        assert row.published_at is not None
        assert row.last_error == ""
    assert event_ids(drain(aws, "nudged-ops")) == outbox_ids()


@pytest.mark.django_db
def test_several_pending_events_go_out_in_publish_batches(aws, product, sns_calls):
    Product.objects.filter(pk=product.pk).update(stock=20)
    for _ in range(11):
        place_order(sku=SKU, quantity=1)

    report = relay_outbox()

    assert (report.published, report.failed) == (11, 0)
    assert sns_calls == ["PublishBatch", "Publish"]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    ops = drain(aws, "nudged-ops")
    sent = {json.loads(json.loads(m["Body"])["Message"])["event_id"] for m in ops}
    assert sent == {str(pk) for pk in OutboxEvent.objects.values_list("pk", flat=True)}


@pytest.mark.django_db
def test_a_depletion_goes_out_before_the_sales_events_ahead_of_it(product, settings, monkeypatch):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(outbox, "CLAIM_SIZE", 5)
    Product.objects.filter(pk=product.pk).update(stock=8)
    for _ in range(8):
        place_order(sku=SKU, quantity=1)  # the last one empties the product

    report = relay_outbox()

    assert report.published == 9
    types = [message.body["type"] for _, message in InMemoryPublisher.sent]
    assert types == ["stock.depleted"] + ["order.completed"] * 8
    assert [message.body["order_id"] for _, message in InMemoryPublisher.sent[1:]] == sorted(
        Order.objects.values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_the_relay_loop_pauses_after_draining_so_the_next_calls_are_full(
    product, settings, monkeypatch
):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    pauses: list[float] = []
    monkeypatch.setattr(outbox, "sleep", pauses.append)
    place_order(sku=SKU, quantity=1)
    place_order(sku=SKU, quantity=1)

    assert outbox.relay_round(wait=0) == 2
    assert outbox.relay_round(wait=0) == 0

    assert pauses == [settings.OUTBOX_RELAY_LINGER, outbox.RELAY_IDLE_SECONDS]


@pytest.mark.django_db
def test_the_relay_loop_goes_straight_on_when_its_time_ran_out_with_a_backlog(
    product, settings, monkeypatch
):
    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"
    monkeypatch.setattr(InMemoryPublisher, "sent", [])
    monkeypatch.setattr(outbox, "CLAIM_SIZE", 2)
    clock = iter([0.0, 0.0, 99.0])  # the deadline, one claim, then the round's time is up
    monkeypatch.setattr(outbox, "monotonic", lambda: next(clock))
    pauses: list[float] = []
    monkeypatch.setattr(outbox, "sleep", pauses.append)
    Product.objects.filter(pk=product.pk).update(stock=10)
    for _ in range(3):
        place_order(sku=SKU, quantity=1)

    assert outbox.relay_round(wait=0) == 2

    assert pauses == []
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 1


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

    with ThreadPoolExecutor(max_workers=relays) as pool:
        reports = list(pool.map(relay, range(relays)))

    assert sum(r.published for r in reports) == events
    assert sum(r.failed for r in reports) == 0
    assert backlog()["pending"] == 0
    assert messages_in(aws, "nudged-ops") == events


@pytest.mark.django_db(transaction=True)
def test_the_relay_loop_publishes_what_commits_and_stops_the_per_commit_tasks(
    aws, product, monkeypatch
):
    from factory_bridge.services import outbox, pollers

    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(outbox, "_loop_seen_until", 0.0)
    Product.objects.filter(pk=product.pk).update(stock=20)
    for _ in range(5):
        place_order(sku=SKU, quantity=1)

    rounds = pollers.run_poller(name="outbox", seconds=1.5, handover=False)

    assert rounds >= 1
    assert backlog()["pending"] == 0
    assert sorted(event_ids(drain(aws, "nudged-ops"))) == sorted(outbox_ids())

    # While the loop's lease is fresh, a commit queues no relay task of its own.
    assert pollers.claim("outbox", "someone-else")
    queued = OrmQ.objects.count()
    outbox.trigger_relay()
    assert OrmQ.objects.count() == queued
