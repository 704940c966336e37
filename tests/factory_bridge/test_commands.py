"""Operator commands for the dead-letter queue: redrive_dlq and queue_stats."""

import json
import re
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from factory_bridge.management.commands.redrive_dlq import Command as RedriveCommand
from factory_bridge.models import FailedMessage
from factory_bridge.queues import QueueError, SqsQueue
from factory_bridge.services import dlq
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.provisioning import provision
from inventory.models import Product
from nudged.core import leases
from nudged.core.models import OutboxEvent
from tests.factory_bridge.test_dlq import (
    SKU_A,
    SKU_B,
    bury,
    closed_port_url,
    drain_to_dlq,
    queue_total,
    record_all_dead,
    shorten_dlq_timing,
)

pytestmark = pytest.mark.usefixtures("quick_dlq")

UNREACHABLE = "http://127.0.0.1:1"


@pytest.fixture
def quick_dlq(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten_dlq_timing(monkeypatch)


@pytest.fixture
def dead(aws, db) -> dict[str, FailedMessage]:  # type: ignore[no-untyped-def]
    """Two depletions in the DLQ, recorded by the watcher; keyed by SKU."""
    bury(SKU_A)
    bury(SKU_B)
    return {row.sku: row for row in record_all_dead(2)}


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def statuses() -> dict[str, str]:
    return dict(FailedMessage.objects.values_list("sku", "status"))


# --- redrive_dlq


def test_redrive_all_moves_every_dead_message(dead):
    output = run("redrive_dlq", "--all")

    for row in dead.values():
        assert f"moved {row.sqs_message_id}" in output
    assert "Redrive: 2 moved, 0 failed." in output
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 2
    assert statuses() == {SKU_A: "redriven", SKU_B: "redriven"}
    assert all(row.redriven_at for row in FailedMessage.objects.all())


def test_redrive_keeps_body_so_the_consumer_reads_the_same_depletion(dead):
    run("redrive_dlq", "--all")

    bodies = {m.body for m in SqsQueue(settings.SQS_RESTOCK_QUEUE).receive(wait=1)}
    assert bodies == {row.body for row in dead.values()}


def test_dry_run_lists_and_moves_nothing(dead):
    output = run("redrive_dlq", "--all", "--dry-run")

    for row in dead.values():
        assert f"would move {row.sqs_message_id}  stock.depleted  {row.sku}" in output
    assert "Dry run: 2 message(s) would move." in output
    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts()["visible"] == 2
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}


def test_limit_moves_exactly_that_many(dead):
    output = run("redrive_dlq", "--limit", "1")

    assert "Redrive: 1 moved, 0 failed." in output
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    assert sorted(statuses().values()) == ["dead", "redriven"]


@pytest.mark.parametrize("name_by", ["sqs_message_id", "fingerprint"])
def test_message_id_moves_exactly_that_message(dead, name_by):
    chosen = dead[SKU_B]

    output = run("redrive_dlq", "--message-id", getattr(chosen, name_by))

    assert f"moved {chosen.sqs_message_id}" in output
    assert "Redrive: 1 moved, 0 failed." in output
    assert statuses() == {SKU_A: "dead", SKU_B: "redriven"}
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
    [moved] = SqsQueue(settings.SQS_RESTOCK_QUEUE).receive(wait=1)
    assert moved.body == chosen.body


def test_unknown_message_id_is_an_error_and_moves_nothing(dead):
    with pytest.raises(CommandError, match="Not found in the DLQ: no-such-id"):
        run("redrive_dlq", "--message-id", "no-such-id")

    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts()["visible"] == 2
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}


@pytest.mark.django_db(transaction=True)
def test_unknown_message_id_exits_non_zero_from_the_command_line(aws, capsys):
    bury(SKU_A)

    with pytest.raises(SystemExit) as exited:
        RedriveCommand().run_from_argv(["manage.py", "redrive_dlq", "--message-id", "no-such-id"])

    assert exited.value.code == 1
    assert "Not found in the DLQ: no-such-id" in capsys.readouterr().err
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1


def test_unreachable_endpoint_is_an_error_and_loses_nothing(dead, settings):
    reachable = settings.AWS_ENDPOINT_URL
    settings.AWS_ENDPOINT_URL = UNREACHABLE

    with pytest.raises(CommandError, match="Nothing was moved; check AWS_ENDPOINT_URL"):
        run("redrive_dlq", "--all")

    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}
    settings.AWS_ENDPOINT_URL = reachable
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 2
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0


def test_a_selector_is_required(aws, db):
    with pytest.raises(CommandError, match="one of the arguments --all --limit --message-id"):
        run("redrive_dlq")


@pytest.mark.parametrize("limit", ["0", "-2", "10001", "99999999999"])
def test_limit_out_of_range_is_an_error(dead, limit):
    with pytest.raises(
        CommandError, match=f"--limit must be a number from 1 to 10000 \\(got {limit}\\)"
    ):
        run("redrive_dlq", "--limit", limit)

    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}


def test_all_and_limit_are_exclusive(aws, db):
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("redrive_dlq", "--all", "--limit", "1")


def hide_dlq_messages() -> int:
    """Receive every DLQ message as another reader would, hiding them for a minute."""
    return len(SqsQueue(settings.SQS_RESTOCK_DLQ).receive(visibility=60))


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_nothing_moved_while_the_dlq_holds_messages_is_an_error_that_says_why(dead, dry_run):
    assert hide_dlq_messages() == 2

    with pytest.raises(CommandError) as failed:
        run("redrive_dlq", "--all", *dry_run)

    message = str(failed.value)
    assert message.startswith("Nothing could be listed" if dry_run else "Nothing was moved")
    assert "the DLQ holds 2 message(s), 2 of them in flight" in message
    assert "run again in a minute" in message
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}


def test_a_message_id_hidden_by_another_reader_is_not_found_and_says_why(dead):
    hide_dlq_messages()

    with pytest.raises(CommandError) as failed:
        run("redrive_dlq", "--message-id", dead[SKU_A].fingerprint)

    assert f"Not found in the DLQ: {dead[SKU_A].fingerprint}." in str(failed.value)
    assert "2 of them in flight" in str(failed.value)


def test_an_empty_dlq_moves_nothing_and_says_so(aws, db):
    output = run("redrive_dlq", "--all")

    assert "Redrive: 0 moved, 0 failed." in output
    assert "The DLQ is empty." in output


def test_redrive_refuses_while_another_redrive_holds_the_dlq(dead):
    assert leases.claim(dlq.DLQ_LEASE, "another-redrive")

    with pytest.raises(CommandError, match="Nothing was moved: another redrive or discard"):
        run("redrive_dlq", "--all")

    assert queue_total(settings.SQS_RESTOCK_DLQ) == 2
    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}
    leases.release(dlq.DLQ_LEASE, "another-redrive")
    assert "Redrive: 2 moved, 0 failed." in run("redrive_dlq", "--all")


# --- redrive_dlq when things go wrong part way


def test_messages_that_could_not_be_sent_are_released_for_a_retry(dead, monkeypatch):
    monkeypatch.setattr(SqsQueue, "send_batch", lambda self, entries: {})

    with pytest.raises(CommandError, match="2 message\\(s\\) could not be moved"):
        run("redrive_dlq", "--all")

    assert statuses() == {SKU_A: "dead", SKU_B: "dead"}
    assert SqsQueue(settings.SQS_RESTOCK_DLQ).counts()["visible"] == 2


def test_an_endpoint_failure_after_a_batch_moved_does_not_claim_nothing_moved(dead, monkeypatch):
    receive = SqsQueue.receive
    batches = []

    def drops_after_first_batch(self, **kwargs):  # type: ignore[no-untyped-def]
        if batches:
            raise QueueError("SQS receive_message failed: connection reset")
        batch = receive(self, **kwargs)
        if batch:
            batches.append(batch)
        return batch

    monkeypatch.setattr(SqsQueue, "receive", drops_after_first_batch)

    with pytest.raises(CommandError) as failed:
        run("redrive_dlq", "--all")

    assert statuses() == {SKU_A: "redriven", SKU_B: "redriven"}
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 2
    assert "Nothing was moved" not in str(failed.value)


def test_fingerprint_finds_a_message_that_died_again_before_the_watcher_saw_it(
    dead, product, settings
):
    chosen = dead[SKU_A]
    Product.objects.filter(pk=product.pk).update(stock=0)  # what the depletion says
    run("redrive_dlq", "--message-id", chosen.fingerprint)
    # It fails again at once: the factory is down and SQS dead-letters it on the next receive.
    settings.SQS_VISIBILITY_TIMEOUT = 1
    settings.SQS_MAX_RECEIVE_COUNT = 1
    provision()
    settings.FACTORY_API_URL = closed_port_url()
    assert consume_restock(wait=1).outcomes == {"retry": 1}
    drain_to_dlq(2)
    assert FailedMessage.objects.get(sku=SKU_A).status == FailedMessage.Status.REDRIVEN

    output = run("redrive_dlq", "--message-id", chosen.fingerprint)

    assert "Redrive: 1 moved, 0 failed." in output
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1


# --- queue_stats


@pytest.fixture
def pending_event(db) -> OutboxEvent:  # type: ignore[no-untyped-def]
    return OutboxEvent.objects.create(
        topic=OutboxEvent.Topic.STOCK,
        event_type="stock.depleted",
        body={},
        attributes={},
        sku=SKU_A,
    )


@pytest.fixture
def dead_event(db) -> OutboxEvent:  # type: ignore[no-untyped-def]
    return OutboxEvent.objects.create(
        topic=OutboxEvent.Topic.SALES,
        event_type="order.completed",
        body={},
        attributes={},
        sku=SKU_A,
        attempts=10,
        dead_at=timezone.now(),
    )


def test_queue_stats_prints_a_table(aws, db, pending_event, dead_event):
    bury(SKU_A)
    bury(SKU_B)

    lines = run("queue_stats").splitlines()

    assert lines[0].split() == ["queue", "visible", "in", "flight", "delayed"]
    rows = [(line.split()[0], line.split()[1:]) for line in lines[1:6]]
    # Every queue, each dead-letter queue after its source.
    assert rows == [
        (settings.SQS_RESTOCK_QUEUE, ["0", "0", "0"]),
        (settings.SQS_RESTOCK_DLQ, ["2", "0", "0"]),
        (settings.SQS_NOTIFY_QUEUE, ["0", "0", "0"]),
        (settings.SQS_NOTIFY_DLQ, ["0", "0", "0"]),
        (settings.SQS_OPS_QUEUE, ["0", "0", "0"]),
    ]
    assert re.fullmatch(r"outbox: 1 pending, oldest [0-9.]+s, 1 dead", lines[6])


def test_queue_stats_json(aws, db, pending_event, dead_event):
    bury(SKU_A)

    stats = json.loads(run("queue_stats", "--json"))

    assert stats["queues"] == {
        settings.SQS_RESTOCK_QUEUE: {"visible": 0, "in_flight": 0, "delayed": 0},
        settings.SQS_RESTOCK_DLQ: {"visible": 1, "in_flight": 0, "delayed": 0},
        settings.SQS_NOTIFY_QUEUE: {"visible": 0, "in_flight": 0, "delayed": 0},
        settings.SQS_NOTIFY_DLQ: {"visible": 0, "in_flight": 0, "delayed": 0},
        settings.SQS_OPS_QUEUE: {"visible": 0, "in_flight": 0, "delayed": 0},
    }
    assert stats["outbox"]["pending"] == 1
    assert stats["outbox"]["dead"] == 1
    assert stats["outbox"]["oldest_age_seconds"] >= 0


def test_queue_stats_unreachable_endpoint_is_an_error(aws, db, settings):
    settings.AWS_ENDPOINT_URL = UNREACHABLE

    with pytest.raises(CommandError, match="Is AWS_ENDPOINT_URL right"):
        run("queue_stats")
