"""The restock consumer's batch: one bad message never costs the others, and a slow factory
never gets a depletion twice.

Real MySQL, the moto server and the factory simulator over HTTP; messages are built by hand.
"""

import json
import threading
from collections import Counter
from time import monotonic, sleep

import pytest
from django.conf import settings
from django.db import connection

from factory_bridge.models import FailedMessage, MessageFailure, RestockRequest
from factory_bridge.queues import SqsQueue
from factory_bridge.services import pollers
from factory_bridge.services.dlq import watch_dlq
from factory_bridge.services.restock import consumer
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.provisioning import provision
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Factory, Product
from nudged.core.models import WorkerLease
from tests.factory_bridge.sqs import depletion_envelope, messages_in
from tests.factory_bridge.test_dlq import queue_total, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SKU = "CP-502101"


def send(*bodies: str) -> None:
    queue = SqsQueue(settings.SQS_RESTOCK_QUEUE)
    for body in bodies:
        queue.send(body=body)


def with_event_id(body: str, event_id: str) -> str:
    envelope = json.loads(body)
    message = json.loads(envelope["Message"])
    message["event_id"] = event_id
    envelope["Message"] = json.dumps(message)
    return json.dumps(envelope)


def placed(simulator: FactorySimulator) -> list[str]:
    return [r["body"]["MessageAttributeProductId"] for r in simulator.received]


@pytest.fixture
def slow_factory(settings, make_simulator) -> FactorySimulator:  # type: ignore[no-untyped-def]
    """A factory that takes a second to answer each order and never calls back in a test."""
    simulator = make_simulator(delay=600, latency=1.0)
    settings.FACTORY_API_URL = simulator.url
    return simulator


def products(factory: Factory, count: int) -> list[Product]:
    return [
        Product.objects.create(
            sku=f"CP-6000{n:02d}", name=f"도넛 {n}", price=1000, stock=0, factory=factory
        )
        for n in range(count)
    ]


# --- one batch, every kind of bad message, and one real depletion


def test_bad_messages_reach_the_dlq_with_their_reason_and_the_real_one_is_ordered_once(
    aws, product, make_simulator, settings, watcher
):
    factory = make_simulator(delay=600)
    settings.FACTORY_API_URL = factory.url
    Product.objects.filter(pk=product.pk).update(stock=0)  # what the real depletion says
    real = depletion_envelope(SKU)
    long_id = with_event_id(depletion_envelope(SKU), "e" * 200)
    send(
        "not JSON at all {",
        "[" * 100_000,
        long_id,
        depletion_envelope("CP-999999"),
        real,
    )

    report = consume_restock(wait=1)

    assert report.outcomes == {"unreadable": 4, "ordered": 1}
    assert placed(factory) == [SKU]
    # Left: the stock.low of the reorder the depletion decided, which changes nothing.
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    [request] = RestockRequest.objects.all()
    assert request.depletion_key == json.loads(json.loads(real)["Message"])["event_id"]

    def all_recorded() -> list[FailedMessage]:
        rows = list(FailedMessage.objects.all())
        return rows if len(rows) == 4 else []

    rows = wait_until(all_recorded, timeout=20)
    errors = sorted(row.last_error for row in rows)
    assert errors[0].startswith("event id longer than 64 characters: 'eeee")
    assert errors[1] == "parse error: JSON nested too deeply"
    assert errors[2].startswith("parse error: not an SNS envelope (JSONDecodeError(")
    assert errors[3] == "unknown SKU 'CP-999999' in stock.depleted"
    hashed = [row for row in rows if row.fingerprint.startswith("sha256:")]
    assert len(hashed) == 2
    assert all(len(row.fingerprint) <= 100 for row in rows)
    assert MessageFailure.objects.count() == 4
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 4
    assert watcher.is_alive()
    assert consume_restock(wait=0).outcomes == {"duplicate": 1}
    assert len(factory.received) == 1


def test_an_unexpected_error_costs_only_its_own_message_and_is_recorded(
    aws, factory, settings, monkeypatch, make_simulator
):
    simulator = make_simulator(delay=600)
    settings.FACTORY_API_URL = simulator.url
    settings.SQS_VISIBILITY_TIMEOUT = 1
    settings.SQS_MAX_RECEIVE_COUNT = 2
    provision()
    broken, fine = products(factory, 2)
    order_restock = consumer.order_restock

    def fails_for_one_product(*, envelope, sqs_message_id):  # type: ignore[no-untyped-def]
        if envelope.sku == broken.sku:
            raise LookupError("the product row vanished")
        return order_restock(envelope=envelope, sqs_message_id=sqs_message_id)

    monkeypatch.setattr(consumer, "order_restock", fails_for_one_product)
    send(depletion_envelope(broken.sku), depletion_envelope(fine.sku))

    assert consume_restock(wait=1).outcomes == {"retry": 1, "ordered": 1}

    assert placed(simulator) == [fine.sku]
    failure = MessageFailure.objects.get()
    assert failure.error == "LookupError: the product row vanished"

    # Retried, then dead-lettered by SQS; the watcher shows the error it died of.
    def dead_lettered() -> int:
        consume_restock(wait=1)
        return queue_total(settings.SQS_RESTOCK_DLQ)

    wait_until(dead_lettered, timeout=15)
    watch_dlq(wait=1)
    row = FailedMessage.objects.get()
    assert row.sku == broken.sku
    assert row.last_error == "LookupError: the product row vanished"
    assert placed(simulator) == [fine.sku]


# --- a factory slower than the visibility timeout


def test_a_batch_outlasting_the_visibility_timeout_orders_each_depletion_once(
    aws, factory, settings, slow_factory
):
    settings.SQS_VISIBILITY_TIMEOUT = 2
    provision()
    skus = [p.sku for p in products(factory, 6)]
    send(*(depletion_envelope(sku) for sku in skus))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def consumer() -> None:
        try:
            deadline = monotonic() + 30
            while monotonic() < deadline and len(slow_factory.received) < len(skus):
                report = consume_restock(wait=1)
                with lock:
                    outcomes.update(report.outcomes)
            # A few more rounds: a message that reappeared would be taken now.
            for _ in range(3):
                report = consume_restock(wait=1)
                with lock:
                    outcomes.update(report.outcomes)
        finally:
            connection.close()

    consumers = [threading.Thread(target=consumer) for _ in range(2)]
    for thread in consumers:
        thread.start()
    for thread in consumers:
        thread.join(timeout=60)

    assert sorted(placed(slow_factory)) == skus
    # Each depletion decides a reorder whose stock.low follows it into the queue; that one
    # finds its order placed or being placed.
    assert outcomes["ordered"] == 6
    assert set(outcomes) <= {"ordered", "in flight", "duplicate"}
    assert RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED).count() == 6
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0


def test_the_restock_loop_beats_per_message_and_hands_the_rest_over_at_its_deadline(
    aws, factory, settings, slow_factory
):
    skus = [p.sku for p in products(factory, 6)]
    send(*(depletion_envelope(sku) for sku in skus))
    beats: set[object] = set()
    running = threading.Event()

    def sample() -> None:
        try:
            while not running.is_set():
                sleep(0.01)
            while running.is_set():
                beats.add(
                    WorkerLease.objects.filter(name="restock")
                    .values_list("heartbeat_at", flat=True)
                    .first()
                )
                sleep(0.05)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    running.set()
    pollers.run_poller(name="restock", seconds=2.5, handover=False)
    running.clear()
    sampler.join(timeout=10)

    ordered = len(slow_factory.received)
    assert 2 <= ordered < len(skus)
    # One beat per message, not only one per round (the round took several seconds).
    assert len(beats - {None}) >= ordered
    # What the loop did not reach is visible again at once, for its successor, beside the
    # stock.low of each reorder it decided.
    assert messages_in(aws, settings.SQS_RESTOCK_QUEUE) == len(skus)
    outcomes: Counter[str] = Counter()
    while report := consume_restock(wait=0).outcomes:
        outcomes.update(report)
    assert outcomes == {"ordered": len(skus) - ordered, "duplicate": len(skus)}
    assert sorted(placed(slow_factory)) == skus
