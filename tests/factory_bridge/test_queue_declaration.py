"""One declaration of the queues (factory_bridge/infrastructure.py) that everything reads: every
command, metric, loop and setting sees every queue, the notify queue and its DLQ included."""

import json
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command

from factory_bridge import aws as aws_clients
from factory_bridge.infrastructure import NAME_SETTINGS, dead_letter_queues, queue_names
from factory_bridge.services import dlq
from factory_bridge.tools.provisioning import provision
from nudged.ops import metrics
from nudged.ops.dashboard.selectors import dlq_depth, window

# Written out here, not read from the declaration under test.
QUEUES = [
    "nudged-restock",
    "nudged-restock-dlq",
    "nudged-notify",
    "nudged-notify-dlq",
    "nudged-ops",
]
DEAD_LETTER_QUEUES = {"nudged-restock": "nudged-restock-dlq", "nudged-notify": "nudged-notify-dlq"}
NAMES = {
    "SNS_STOCK_TOPIC",
    "SNS_SALES_TOPIC",
    "SQS_RESTOCK_QUEUE",
    "SQS_RESTOCK_DLQ",
    "SQS_NOTIFY_QUEUE",
    "SQS_NOTIFY_DLQ",
    "SQS_OPS_QUEUE",
}


def test_the_declaration_names_every_queue_and_each_dead_letter_queue():
    assert queue_names() == QUEUES
    assert dead_letter_queues() == DEAD_LETTER_QUEUES


def test_every_name_among_the_settings_is_declared():
    named = {
        name
        for name in dir(settings)
        if name.startswith(("SNS_", "SQS_")) and isinstance(getattr(settings, name), str)
    }

    assert named == NAME_SETTINGS == NAMES


def test_a_renamed_queue_resets_the_aws_clients_and_is_renamed_everywhere(settings):
    assert aws_clients.AWS_SETTINGS >= NAMES
    for setting in sorted(NAMES):
        aws_clients.client("sqs")
        setattr(settings, setting, f"house-{setting.lower()}")
        assert aws_clients.client.cache_info().currsize == 0, setting

    assert queue_names() == [
        "house-sqs_restock_queue",
        "house-sqs_restock_dlq",
        "house-sqs_notify_queue",
        "house-sqs_notify_dlq",
        "house-sqs_ops_queue",
    ]
    assert dead_letter_queues() == {
        "house-sqs_restock_queue": "house-sqs_restock_dlq",
        "house-sqs_notify_queue": "house-sqs_notify_dlq",
    }


@pytest.mark.django_db
def test_every_reader_sees_every_queue(aws, monkeypatch):
    stats = StringIO()
    call_command("queue_stats", "--json", stdout=stats)
    metrics.queue_counts.clear()
    provisioned = [name for kind, name, _ in provision().rows if kind == "queue"]
    watched: list[str] = []

    def sweep(queue, source, wait):  # type: ignore[no-untyped-def]
        watched.append(queue.name)
        return 0, 0

    monkeypatch.setattr(dlq, "_sweep", sweep)
    dlq.watch_dlq(wait=2)
    redriven = dlq.redrive(dry_run=True, quiet_seconds=0)

    assert list(json.loads(stats.getvalue())["queues"]) == QUEUES
    assert list(metrics.queue_counts.get()) == QUEUES
    assert sorted(provisioned) == sorted(QUEUES)
    assert watched == list(DEAD_LETTER_QUEUES.values())
    assert list(redriven.by_queue) == list(DEAD_LETTER_QUEUES.items())
    assert set(dlq_depth(window("hour"))) == set(DEAD_LETTER_QUEUES.values())
