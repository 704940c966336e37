"""Dead letters end to end: depletions the factory refuses reach the DLQ, are recorded,
redriven and ordered exactly once; a redrive interrupted between send and delete duplicates
a message but never loses it.

Real MySQL, a real moto server over HTTP and the factory simulator over HTTP.
"""

import json
import socket
import threading
from collections.abc import Callable
from functools import partial
from io import StringIO
from time import monotonic, sleep
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from factory_bridge.management.commands import redrive_dlq as redrive_dlq_command
from factory_bridge.models import FailedMessage, RestockRequest
from factory_bridge.queues import ReceivedMessage, SqsQueue
from factory_bridge.services import dlq
from factory_bridge.services.dlq import redrive, watch_dlq
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.provisioning import provision
from inventory.models import Product
from nudged.core import leases
from nudged.core.models import OutboxEvent
from shop.exceptions import OutOfStock
from shop.services import place_order
from tests.factory_bridge.sqs import depletion_envelope

SKU_A, SKU_B = "CP-502101", "CP-502102"


# --- helpers shared by the dead-letter tests (test_commands.py and test_admin.py import them)


def bury(sku: str) -> str:
    """Put a depletion straight into the DLQ; return its fingerprint (the SNS MessageId)."""
    body = depletion_envelope(sku)
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(body=body)
    return json.loads(body)["MessageId"]


def queue_total(name: str) -> int:
    """Messages in a queue: visible, in flight or delayed."""
    counts = SqsQueue(name).counts()
    return counts["visible"] + counts["in_flight"] + counts["delayed"]


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0, step: float = 0.1) -> Any:
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        result = check()
        if result:
            return result
        sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def record_all_dead(expected: int) -> list[FailedMessage]:
    """Run the DLQ watcher until `expected` rows are dead."""

    def dead() -> list[FailedMessage]:
        watch_dlq(wait=1)
        rows = list(FailedMessage.objects.filter(status=FailedMessage.Status.DEAD))
        return rows if len(rows) == expected else []

    return wait_until(dead, timeout=10, step=0)


def drain_to_dlq(expected: int, *, timeout: float = 20.0) -> None:
    """Consume the restock queue (failing each time) until SQS dead-letters `expected`."""

    def dead_lettered() -> bool:
        consume_restock(wait=1)
        return queue_total(settings.SQS_RESTOCK_DLQ) >= expected

    wait_until(dead_lettered, timeout=timeout, step=0)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def shorten_dlq_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the DLQ timing knobs (watcher hide time and pause, redrive quiet time)."""
    monkeypatch.setattr(dlq, "WATCH_VISIBILITY", 1)
    monkeypatch.setattr(dlq, "WATCH_INTERVAL", 0.2)
    monkeypatch.setattr(dlq, "REDRIVE_QUIET_SECONDS", 2)
    # The command has no option for the quiet time; the service takes it as an argument.
    monkeypatch.setattr(redrive_dlq_command, "redrive", partial(redrive, quiet_seconds=2))


@pytest.fixture
def quick_dlq(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten_dlq_timing(monkeypatch)


@pytest.fixture
def second_product(factory):  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku=SKU_B, name="서울도너츠", price=18900, stock=2, factory=factory
    )


# --- end to end


def failures_by_sku() -> dict[str, FailedMessage]:
    return {row.sku: row for row in FailedMessage.objects.all()}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_depletions_the_factory_refuses_are_dead_lettered_then_redriven_and_ordered_once(
    live_server, aws, settings, product, second_product, make_simulator, quick_dlq
):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SQS_VISIBILITY_TIMEOUT = 1
    settings.SQS_MAX_RECEIVE_COUNT = 2
    provision()
    broken = make_simulator(failure_rate=1.0, delay=0)
    settings.FACTORY_API_URL = broken.url

    place_order(sku=SKU_A, quantity=3)
    place_order(sku=SKU_B, quantity=2)
    drain_to_dlq(2)

    # The watcher records each dead depletion once, with the factory's error.
    assert watch_dlq(wait=1) == 2
    rows = failures_by_sku()
    assert set(rows) == {SKU_A, SKU_B}
    for row in rows.values():
        assert row.status == FailedMessage.Status.DEAD
        # The reorder decided with the sale dies; its depletion was absorbed by it.
        assert row.event_type == "stock.low"
        assert "factory status" in row.last_error
        assert "500" in row.last_error
        assert row.receive_count >= settings.SQS_MAX_RECEIVE_COUNT
        assert row.times_dead == 1
    assert {r["status"] for r in broken.received} == {500}
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    first_counts = {sku: row.receive_count for sku, row in rows.items()}

    # Watching again sees the same messages (their receive count grows) but adds no rows.
    def seen_again() -> bool:
        watch_dlq(wait=1)
        return all(
            FailedMessage.objects.get(sku=sku).receive_count > count
            for sku, count in first_counts.items()
        )

    wait_until(seen_again, timeout=10, step=0)
    assert FailedMessage.objects.count() == 2
    assert set(FailedMessage.objects.values_list("status", flat=True)) == {"dead"}

    # A redriven message that fails again (factory now unreachable) dies on the same row.
    settings.FACTORY_API_URL = closed_port_url()
    report = redrive(message_ids=[rows[SKU_B].fingerprint], quiet_seconds=2)
    assert len(report.moved) == 1
    assert FailedMessage.objects.get(sku=SKU_B).status == FailedMessage.Status.REDRIVEN
    drain_to_dlq(2)

    def died_again() -> bool:
        watch_dlq(wait=1)
        return FailedMessage.objects.get(sku=SKU_B).times_dead == 2

    wait_until(died_again, timeout=10, step=0)
    again = FailedMessage.objects.get(sku=SKU_B)
    assert again.status == FailedMessage.Status.DEAD
    assert again.times_dead == 2
    assert "factory connection" in again.last_error
    assert again.sqs_message_id != rows[SKU_B].sqs_message_id
    assert FailedMessage.objects.count() == 2

    # The factory recovers: redrive everything, then every depletion is ordered exactly once.
    factory = make_simulator(delay=0.5)
    settings.FACTORY_API_URL = factory.url
    out = StringIO()
    call_command("redrive_dlq", "--all", stdout=out)
    assert "Redrive: 2 moved, 0 failed." in out.getvalue()
    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts() == {
        "visible": 0,
        "in_flight": 0,
        "delayed": 0,
    }
    assert set(FailedMessage.objects.values_list("status", flat=True)) == {"redriven"}

    ordered: dict[str, int] = {}

    def consumed() -> bool:
        for outcome, n in consume_restock(wait=1).outcomes.items():
            ordered[outcome] = ordered.get(outcome, 0) + n
        return ordered.get("ordered", 0) >= 2

    wait_until(consumed, timeout=10, step=0)
    assert ordered == {"ordered": 2}
    assert sorted(r["body"]["MessageAttributeProductId"] for r in factory.received) == [
        SKU_A,
        SKU_B,
    ]
    wait_until(lambda: all(r["callback_status"] == "delivered" for r in factory.received))
    for item in (product, second_product):
        item.refresh_from_db()
        assert item.stock == item.restock_quantity
        [restock] = RestockRequest.objects.filter(product=item)
        assert restock.status == RestockRequest.Status.FULFILLED
    assert consume_restock(wait=1).outcomes == {}
    assert len(factory.received) == 2


# --- a redrive that dies between sending and deleting


@pytest.mark.parametrize("crash", ["raises", "silently keeps the message"])
def test_redrive_interrupted_after_send_duplicates_and_the_consumer_absorbs_it(
    crash, aws, product, settings, monkeypatch, make_simulator, quick_dlq
):
    factory = make_simulator(delay=60)
    settings.FACTORY_API_URL = factory.url
    Product.objects.filter(pk=product.pk).update(stock=0)  # what the depletion says
    key = bury(SKU_A)
    record_all_dead(1)
    stranded: list[ReceivedMessage] = []

    def interrupted(self: SqsQueue, messages: list[ReceivedMessage]) -> set[str]:
        stranded.extend(messages)
        if crash == "raises":
            raise RuntimeError("worker killed between send and delete")
        return set()

    with monkeypatch.context() as patch:
        patch.setattr(SqsQueue, "delete_batch", interrupted)
        if crash == "raises":
            with pytest.raises(RuntimeError):
                redrive(message_ids=[key], quiet_seconds=2)
        else:
            assert len(redrive(message_ids=[key], quiet_seconds=2).moved) == 1

    # Sent but not deleted: the message is in both queues, a duplicate and never a loss.
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
    assert len(stranded) == 1

    assert consume_restock(wait=1).outcomes == {"ordered": 1}

    # The crashed redrive's hold on the DLQ copy runs out; the next redrive moves it.
    SqsQueue(settings.SQS_RESTOCK_DLQ).change_visibility(stranded[0], 0)
    assert len(redrive(message_ids=[key], quiet_seconds=2).moved) == 1
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 0

    assert consume_restock(wait=1).outcomes == {"duplicate": 1}
    assert len(factory.received) == 1
    [restock] = RestockRequest.objects.all()
    assert restock.status == RestockRequest.Status.REQUESTED
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert FailedMessage.objects.get().status == FailedMessage.Status.REDRIVEN


# --- the watcher on its own


def test_watch_records_an_unreadable_message_by_its_hash(aws, db, quick_dlq):
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(body="not an SNS envelope")

    [row] = record_all_dead(1)

    assert row.fingerprint.startswith("sha256:")
    assert row.event_type == ""
    assert row.sku == ""
    assert row.body == "not an SNS envelope"
    assert row.last_error == "no processing error recorded"
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1


def envelope_with(**changes: object) -> str:
    """A depletion envelope with top-level fields or message attributes replaced by hand."""
    envelope = json.loads(depletion_envelope(SKU_A))
    for name, value in changes.items():
        if name in envelope:
            envelope[name] = value
        else:
            envelope["MessageAttributes"][name] = {"Type": "String", "Value": value}
    return json.dumps(envelope)


def test_watch_records_whatever_the_dlq_holds_however_malformed(aws, db, quick_dlq):
    bodies = [
        "[" * 100_000,
        envelope_with(MessageId="m" * 200),
        envelope_with(EventType="t" * 200, MessageAttributeProductId="S" * 200),
        envelope_with(MessageAttributeProductId=12345, MessageId=67890),
        depletion_envelope(SKU_B),
    ]
    for body in bodies:
        SqsQueue(settings.SQS_RESTOCK_DLQ).send(body=body)

    rows = {row.body: row for row in record_all_dead(len(bodies))}

    nested = rows[bodies[0]]
    assert nested.fingerprint.startswith("sha256:")
    assert (nested.event_type, nested.sku) == ("", "")
    long_id = rows[bodies[1]]
    assert long_id.fingerprint.startswith("sha256:")
    assert long_id.sku == SKU_A
    truncated = rows[bodies[2]]
    assert (truncated.event_type, truncated.sku) == ("t" * 32, "S" * 32)
    numbers = rows[bodies[3]]
    assert (numbers.fingerprint, numbers.sku) == ("67890", "12345")
    assert rows[bodies[4]].sku == SKU_B
    assert queue_total(settings.SQS_RESTOCK_DLQ) == len(bodies)


def test_watch_records_the_rest_when_one_message_cannot_be_recorded(
    aws, db, quick_dlq, monkeypatch
):
    bury(SKU_A)
    bury(SKU_B)
    describe = dlq._describe

    def fails_for_one(body: str) -> dict:
        if SKU_A in body:
            raise RuntimeError("cannot describe")
        return describe(body)

    monkeypatch.setattr(dlq, "_describe", fails_for_one)

    [row] = record_all_dead(1)

    assert row.sku == SKU_B


def test_watch_stands_aside_while_a_redrive_holds_the_dlq(aws, db, quick_dlq):
    bury(SKU_A)
    assert leases.claim(dlq.DLQ_LEASE, "a-redrive")

    assert watch_dlq(wait=1) == 0

    assert not FailedMessage.objects.exists()
    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts()["visible"] == 1
    leases.release(dlq.DLQ_LEASE, "a-redrive")
    assert watch_dlq(wait=1) == 1


def test_watch_shows_what_it_recorded_again_at_once(aws, db, quick_dlq):
    bury(SKU_A)
    bury(SKU_B)

    assert watch_dlq(wait=1) == 2

    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts() == {
        "visible": 2,
        "in_flight": 0,
        "delayed": 0,
    }


@pytest.mark.django_db(transaction=True)
def test_a_redrive_moves_a_poison_message_once_while_the_consumer_runs(aws, quick_dlq):
    """The consumer sends an unreadable message straight back to the DLQ under a new id; the
    redrive moves it once, ends, and leaves it in the DLQ for the operator to discard."""
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(body="not an event")
    stop = threading.Event()

    def consumer() -> None:
        try:
            while not stop.is_set():
                consume_restock(wait=1)
        finally:
            connections.close_all()

    reports: list[dlq.RedriveReport] = []

    def operator() -> None:
        try:
            reports.append(redrive(quiet_seconds=2))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=consumer), threading.Thread(target=operator, daemon=True)]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=30)
    stop.set()
    threads[0].join(timeout=10)

    assert reports, "the redrive did not end"
    assert len(reports[0].moved) == 1
    wait_until(lambda: queue_total(settings.SQS_RESTOCK_DLQ) == 1)


# --- discarding a dead depletion


def test_discarding_a_dead_depletion_lets_the_next_empty_order_report_a_new_one(
    aws, product, quick_dlq
):
    place_order(sku=SKU_A, quantity=product.stock)
    product.refresh_from_db()
    assert product.depleted_at is not None
    bury(SKU_A)
    [row] = record_all_dead(1)

    report = dlq.discard(rows=[row])

    assert report.discarded == 1
    product.refresh_from_db()
    assert product.depleted_at is None
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    with pytest.raises(OutOfStock):
        place_order(sku=SKU_A, quantity=1)
    depletions = OutboxEvent.objects.filter(event_type="stock.depleted", sku=SKU_A)
    assert depletions.count() == 2
    product.refresh_from_db()
    assert product.depleted_at is not None


def test_discard_keeps_a_row_whose_message_something_else_holds(aws, db, quick_dlq):
    bury(SKU_A)
    [row] = record_all_dead(1)
    assert len(SqsQueue(settings.SQS_RESTOCK_DLQ).receive(visibility=60)) == 1

    report = dlq.discard(rows=[row])

    assert (report.discarded, report.missing) == (0, [row.fingerprint])
    row.refresh_from_db()
    assert row.status == FailedMessage.Status.DEAD


def test_a_dead_depletion_leaves_its_restock_waiting_for_the_sweep(aws, product, quick_dlq):
    body = depletion_envelope(SKU_A)
    event_id = json.loads(json.loads(body)["Message"])["event_id"]
    request = RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        depletion_key=event_id,
        last_error="factory refused: 500",
    )
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(body=body)

    record_all_dead(1)

    # Not "needs staff": the sweep still retries it with backoff until the re-order cap.
    request.refresh_from_db()
    assert request.status == RestockRequest.Status.PENDING
    assert request.get_status_display() == "Waiting for the factory"
