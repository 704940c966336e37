"""provision() and `provision_aws` against a real moto server: idempotent, and settings win."""

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from factory_bridge import aws as aws_clients
from factory_bridge.infrastructure import NOTIFY_DLQ, RESTOCK_DLQ
from factory_bridge.tools.provisioning import provision
from factory_bridge.tools.provisioning import queue_attributes as wanted_attributes

CLOSED_ENDPOINT = "http://127.0.0.1:1"
RESOURCES = [
    ("topic", "nudged-stock-events"),
    ("topic", "nudged-sales-events"),
    ("queue", "nudged-restock-dlq"),
    ("queue", "nudged-restock"),
    ("queue", "nudged-notify-dlq"),
    ("queue", "nudged-notify"),
    ("queue", "nudged-ops"),
    ("subscription", "nudged-stock-events → nudged-restock"),
    ("subscription", "nudged-stock-events → nudged-notify"),
    ("subscription", "nudged-stock-events → nudged-ops"),
    ("subscription", "nudged-sales-events → nudged-ops"),
]


def queue_attributes(name: str) -> dict[str, str]:
    sqs = aws_clients.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def subscriptions(topic: str) -> dict[str, dict[str, str]]:
    """{queue name: subscription attributes} for every subscription of `topic`."""
    sns = aws_clients.client("sns")
    arn = aws_clients.topic_arn(topic)
    found = {}
    for sub in sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]:
        attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])
        found[sub["Endpoint"].rsplit(":", 1)[-1]] = attributes["Attributes"]
    return found


def test_first_run_creates_everything_and_the_second_changes_nothing(empty_moto):
    first = provision()
    second = provision()

    assert first.rows == [(kind, name, "created") for kind, name in RESOURCES]
    assert first.changed is True
    assert second.rows == [(kind, name, "unchanged") for kind, name in RESOURCES]
    assert second.changed is False


def test_provisioning_an_up_to_date_account_changes_nothing(aws):
    report = provision()

    assert {action for _, _, action in report.rows} == {"unchanged"}
    assert len(report.rows) == len(RESOURCES)
    assert report.changed is False


def test_restock_queue_redrives_to_the_dlq_with_the_configured_policy(aws):
    restock = queue_attributes("nudged-restock")
    dlq_arn = queue_attributes("nudged-restock-dlq")["QueueArn"]

    policy = json.loads(restock["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == dlq_arn
    assert int(policy["maxReceiveCount"]) == settings.SQS_MAX_RECEIVE_COUNT
    assert restock["VisibilityTimeout"] == str(settings.SQS_VISIBILITY_TIMEOUT)
    assert "RedrivePolicy" not in queue_attributes("nudged-restock-dlq")


def test_notify_queue_redrives_to_its_own_dlq(aws):
    notify = queue_attributes("nudged-notify")

    policy = json.loads(notify["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == queue_attributes("nudged-notify-dlq")["QueueArn"]
    assert int(policy["maxReceiveCount"]) == settings.SQS_MAX_RECEIVE_COUNT
    assert notify["VisibilityTimeout"] == str(settings.SQS_VISIBILITY_TIMEOUT)


def test_dead_letter_queues_accept_dead_letters_only_from_their_own_source(aws):
    """What provision_aws sets; moto accepts RedriveAllowPolicy but never reports it."""
    for dlq, source in [(RESTOCK_DLQ, "nudged-restock"), (NOTIFY_DLQ, "nudged-notify")]:
        policy = json.loads(wanted_attributes(dlq, {})["RedriveAllowPolicy"])

        assert policy == {
            "redrivePermission": "byQueue",
            "sourceQueueArns": [queue_attributes(source)["QueueArn"]],
        }


def test_subscriptions_fan_out_with_envelopes_and_only_reorder_events_reach_restock(aws):
    stock = subscriptions("stock")
    sales = subscriptions("sales")

    assert set(stock) == {"nudged-restock", "nudged-ops", "nudged-notify"}
    assert set(sales) == {"nudged-ops"}
    assert json.loads(stock["nudged-restock"]["FilterPolicy"]) == {
        "EventType": ["stock.depleted", "stock.low"]
    }
    assert json.loads(stock["nudged-notify"]["FilterPolicy"]) == {
        "EventType": ["stock.replenished"]
    }
    assert not stock["nudged-ops"].get("FilterPolicy")
    assert not sales["nudged-ops"].get("FilterPolicy")
    for attributes in [*stock.values(), *sales.values()]:
        assert attributes["RawMessageDelivery"] == "false"


def test_changed_max_receive_count_is_reported_and_applied(aws, settings):
    settings.SQS_MAX_RECEIVE_COUNT = settings.SQS_MAX_RECEIVE_COUNT + 2

    report = provision()

    assert report.changed is True
    assert [row for row in report.rows if row[2] != "unchanged"] == [
        ("queue", "nudged-restock", "updated"),
        ("queue", "nudged-notify", "updated"),
    ]
    for queue in ("nudged-restock", "nudged-notify"):
        policy = json.loads(queue_attributes(queue)["RedrivePolicy"])
        assert int(policy["maxReceiveCount"]) == settings.SQS_MAX_RECEIVE_COUNT


def test_changed_visibility_timeout_is_reported_and_applied(aws, settings):
    settings.SQS_VISIBILITY_TIMEOUT = 7

    report = provision()

    assert ("queue", "nudged-restock", "updated") in report.rows
    assert queue_attributes("nudged-restock")["VisibilityTimeout"] == "7"


def test_command_lists_every_resource_and_says_nothing_changed(aws):
    out = StringIO()

    call_command("provision_aws", stdout=out)

    lines = out.getvalue().splitlines()
    endpoint, region = settings.AWS_ENDPOINT_URL, settings.AWS_DEFAULT_REGION
    assert lines[0] == f"Endpoint: {endpoint}  region: {region}"
    rows = [line.split() for line in lines[1:-1]]
    assert [(row[0], row[-1]) for row in rows] == [(kind, "unchanged") for kind, _ in RESOURCES]
    for (_, name), line in zip(RESOURCES, lines[1:-1], strict=True):
        assert name in line
    assert lines[-1] == "Provisioning done: nothing to change."


def test_command_on_a_fresh_account_reports_created(empty_moto):
    out = StringIO()

    call_command("provision_aws", stdout=out)

    output = out.getvalue()
    assert output.count("created") == len(RESOURCES)
    assert output.rstrip().endswith("Provisioning done: changed.")


def test_command_with_an_unreachable_endpoint_raises_command_error(settings):
    settings.AWS_ENDPOINT_URL = CLOSED_ENDPOINT

    with pytest.raises(CommandError, match=f"Could not provision at {CLOSED_ENDPOINT}: ") as error:
        call_command("provision_aws", stdout=StringIO())

    assert "Could not connect to the endpoint URL" in str(error.value)


def test_command_with_an_unreachable_endpoint_prints_no_traceback():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nudged.settings.test",
        "AWS_ENDPOINT_URL": CLOSED_ENDPOINT,
    }

    finished = subprocess.run(
        [sys.executable, "manage.py", "provision_aws"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 1
    assert finished.stderr.startswith(f"CommandError: Could not provision at {CLOSED_ENDPOINT}: ")
    assert "Traceback" not in finished.stderr + finished.stdout
