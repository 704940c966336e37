"""Redrive and discard while the DLQ watcher loop runs, as it does whenever the system is up.

The watcher runs in a thread through `pollers.run_poller("dlq")`, exactly as the cluster
runs it, against the real moto server; redrive and discard run meanwhile, with the timings
the system uses.
"""

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from factory_bridge.messages import fingerprint
from factory_bridge.models import DlqJob, FailedMessage
from factory_bridge.queues import SqsQueue
from factory_bridge.services import dlq
from factory_bridge.services.notify import consume_notify
from tests.factory_bridge.test_dlq import SKU_A, SKU_B, bury, queue_total, wait_until
from tests.factory_bridge.test_notify import replenished_envelope

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:factory_bridge_failedmessage_changelist")


def bury_arrival(sku: str) -> str:
    """Put an arrival straight into the notify DLQ; return its fingerprint."""
    body = replenished_envelope(sku)
    SqsQueue(settings.SQS_NOTIFY_DLQ).send(body=body)
    return fingerprint(body)


def recorded(*fingerprints: str) -> list[FailedMessage]:
    """Wait until the watcher has recorded these messages as dead; return their rows."""

    def rows() -> list[FailedMessage]:
        found = list(
            FailedMessage.objects.filter(
                fingerprint__in=fingerprints, status=FailedMessage.Status.DEAD
            )
        )
        return found if len(found) == len(fingerprints) else []

    return wait_until(rows, timeout=20)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_redrive_all_moves_every_message_while_the_watcher_runs(watcher):
    for attempt in range(3):
        keys = [bury(SKU_A), bury(SKU_B)]
        recorded(*keys)

        output = run("redrive_dlq", "--all")

        assert "Redrive: 2 moved, 0 failed." in output, f"attempt {attempt}: {output}"
        assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
        assert set(
            FailedMessage.objects.filter(fingerprint__in=keys).values_list("status", flat=True)
        ) == {FailedMessage.Status.REDRIVEN}
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 6
    assert watcher.is_alive()


def test_redrive_limit_and_message_id_move_while_the_watcher_runs(watcher):
    first, second = bury(SKU_A), bury(SKU_B)
    recorded(first, second)

    assert "Redrive: 1 moved, 0 failed." in run("redrive_dlq", "--limit", "1")
    [left] = FailedMessage.objects.filter(status=FailedMessage.Status.DEAD)
    assert "Redrive: 1 moved, 0 failed." in run("redrive_dlq", "--message-id", left.fingerprint)

    assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 2


def last_outcome() -> str:
    """The outcome of the job the admin queued last, which the tests' inline cluster ran."""
    return DlqJob.objects.latest("pk").outcome


def test_the_admin_redrive_action_moves_the_message_while_the_watcher_runs(watcher, admin_client):
    for _ in range(2):
        [row] = recorded(bury(SKU_A))

        response = admin_client.post(
            CHANGELIST,
            {"action": "redrive_selected", "_selected_action": [row.pk]},
            follow=True,
        )

        assert "Redrive of 1 message(s) queued as" in response.content.decode()
        assert last_outcome() == "Redriven: 1 moved, 0 failed, 0 not found in the DLQ."
        row.refresh_from_db()
        assert row.status == FailedMessage.Status.REDRIVEN
        assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 2


def test_discard_deletes_the_message_while_the_watcher_runs(watcher):
    for _ in range(2):
        chosen, kept = recorded(bury(SKU_A), bury(SKU_B))

        assert dlq.discard(rows=[chosen]).discarded == 1

        chosen.refresh_from_db()
        assert chosen.status == FailedMessage.Status.DISCARDED
        assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
        kept.refresh_from_db()
        assert kept.status == FailedMessage.Status.DEAD
        assert dlq.discard(rows=[kept]).discarded == 1
        assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert watcher.is_alive()


def test_redrive_all_moves_dead_notify_messages_back_to_the_notify_queue(watcher):
    # Unreadable: the notify loop dead-letters it at once.
    SqsQueue(settings.SQS_NOTIFY_QUEUE).send(body="not an envelope")
    consume_notify(wait=1)
    unreadable = fingerprint("not an envelope")
    restock = bury(SKU_B)
    recorded(unreadable, restock)

    output = run("redrive_dlq", "--all")

    assert "Redrive: 2 moved, 0 failed." in output
    assert "nudged-restock-dlq -> nudged-restock: 1 moved, 0 left" in output
    assert "nudged-notify-dlq -> nudged-notify: 1 moved, 0 left" in output
    assert queue_total(settings.SQS_NOTIFY_DLQ) == queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert queue_total(settings.SQS_NOTIFY_QUEUE) == queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    row = FailedMessage.objects.get(fingerprint=unreadable)
    assert row.status == FailedMessage.Status.REDRIVEN
    assert (row.source_queue, row.dlq) == (settings.SQS_NOTIFY_QUEUE, settings.SQS_NOTIFY_DLQ)
    assert watcher.is_alive()


def test_redrive_by_message_id_finds_a_dead_notify_message(watcher):
    key = bury_arrival(SKU_A)
    recorded(key)

    output = run("redrive_dlq", "--message-id", key)

    assert "Redrive: 1 moved, 0 failed." in output
    assert queue_total(settings.SQS_NOTIFY_DLQ) == 0
    assert queue_total(settings.SQS_NOTIFY_QUEUE) == 1
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0


def test_the_admin_redrive_action_moves_a_dead_notify_message_back(watcher, admin_client):
    # An arrival whose emails failed until SQS dead-lettered it.
    arrival = recorded(bury_arrival(SKU_A))[0]
    depletion = recorded(bury(SKU_B))[0]

    response = admin_client.post(
        CHANGELIST,
        {"action": "redrive_selected", "_selected_action": [arrival.pk, depletion.pk]},
        follow=True,
    )

    assert "Redrive of 2 message(s) queued as" in response.content.decode()
    assert last_outcome() == "Redriven: 2 moved, 0 failed, 0 not found in the DLQ."
    assert queue_total(settings.SQS_NOTIFY_DLQ) == queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert queue_total(settings.SQS_NOTIFY_QUEUE) == queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    arrival.refresh_from_db()
    assert arrival.status == FailedMessage.Status.REDRIVEN
    assert arrival.source_queue == settings.SQS_NOTIFY_QUEUE


def test_discard_deletes_a_dead_notify_message(watcher):
    arrival, depletion = recorded(bury_arrival(SKU_A), bury(SKU_B))

    assert dlq.discard(rows=[arrival, depletion]).discarded == 2

    assert queue_total(settings.SQS_NOTIFY_DLQ) == queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert set(
        FailedMessage.objects.filter(pk__in=[arrival.pk, depletion.pk]).values_list(
            "status", flat=True
        )
    ) == {FailedMessage.Status.DISCARDED}
