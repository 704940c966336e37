"""Create or update Nudged's SNS topics, SQS queues and subscriptions (idempotent)."""

import json
import logging
from dataclasses import dataclass, field

from django.conf import settings

from factory_bridge import aws
from factory_bridge.events import (
    EVENT_TYPE_ATTRIBUTE,
    STOCK_DEPLETED,
    STOCK_LOW,
    STOCK_REPLENISHED,
)

logger = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


@dataclass
class ProvisionReport:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, kind: str, name: str, action: str) -> None:
        self.rows.append((kind, name, action))

    @property
    def changed(self) -> bool:
        return any(action != UNCHANGED for _, _, action in self.rows)


def provision() -> ProvisionReport:
    """Make the AWS resources match the settings; a second run changes nothing."""
    report = ProvisionReport()
    sns, sqs = aws.client("sns"), aws.client("sqs")
    existing_topics = _existing_topics(sns)
    topics = {}
    for key in ("stock", "sales"):
        name = aws.topic_name(key)
        topics[key] = sns.create_topic(Name=name)["TopicArn"]
        report.add("topic", name, UNCHANGED if topics[key] in existing_topics else CREATED)

    restock_arn = _consumer_queue(
        sqs, settings.SQS_RESTOCK_QUEUE, settings.SQS_RESTOCK_DLQ, topics["stock"], report
    )
    ops_attributes = {
        "Policy": _queue_policy(settings.SQS_OPS_QUEUE, list(topics.values())),
        "MessageRetentionPeriod": str(settings.SQS_OPS_RETENTION),
    }
    ops_arn = _queue(sqs, settings.SQS_OPS_QUEUE, ops_attributes, report)

    restock_events = json.dumps({EVENT_TYPE_ATTRIBUTE: [STOCK_DEPLETED, STOCK_LOW]})
    _subscribe(sns, topics["stock"], restock_arn, restock_events, report)
    _subscribe(sns, topics["stock"], ops_arn, None, report)
    _subscribe(sns, topics["sales"], ops_arn, None, report)
    notify_arn = _consumer_queue(
        sqs, settings.SQS_NOTIFY_QUEUE, settings.SQS_NOTIFY_DLQ, topics["stock"], report
    )
    notify_events = json.dumps({EVENT_TYPE_ATTRIBUTE: [STOCK_REPLENISHED]})
    _subscribe(sns, topics["stock"], notify_arn, notify_events, report)
    logger.info("provisioned changed=%s", report.changed)
    return report


def _consumer_queue(
    sqs: object, name: str, dlq: str, topic_arn: str, report: ProvisionReport
) -> str:
    """A queue the topic delivers to, with its own DLQ; return the queue's ARN."""
    # Dead letters are kept as long as SQS allows (14 days) for staff to inspect and redrive.
    dlq_arn = _queue(sqs, dlq, {"MessageRetentionPeriod": "1209600"}, report)
    attributes = {
        "VisibilityTimeout": str(settings.SQS_VISIBILITY_TIMEOUT),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.SQS_MAX_RECEIVE_COUNT}
        ),
        "Policy": _queue_policy(name, [topic_arn]),
    }
    return _queue(sqs, name, attributes, report)


def _existing_topics(sns: object) -> set[str]:
    arns: set[str] = set()
    for page in sns.get_paginator("list_topics").paginate():  # type: ignore[attr-defined]
        arns |= {t["TopicArn"] for t in page["Topics"]}
    return arns


def _queue(sqs: object, name: str, wanted: dict[str, str], report: ProvisionReport) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]  # type: ignore[attr-defined]
    except sqs.exceptions.QueueDoesNotExist:  # type: ignore[attr-defined]
        url = sqs.create_queue(QueueName=name, Attributes=wanted)["QueueUrl"]  # type: ignore[attr-defined]
        report.add("queue", name, CREATED)
    else:
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]  # type: ignore[attr-defined]
        stale = {k: v for k, v in wanted.items() if not _same(current.get(k), v)}
        if stale:
            # All wanted attributes, not only the stale ones: some endpoints drop the
            # attributes a SetQueueAttributes call leaves out.
            sqs.set_queue_attributes(QueueUrl=url, Attributes=wanted)  # type: ignore[attr-defined]
        report.add("queue", name, UPDATED if stale else UNCHANGED)
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][  # type: ignore[attr-defined]
        "QueueArn"
    ]


def _same(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    try:
        return json.loads(current) == json.loads(wanted)
    except ValueError:
        return current == wanted


def _queue_policy(queue: str, topic_arns: list[str]) -> str:
    """Allow the topics (and only them) to deliver to the queue, as real AWS requires."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowNudgedTopics",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": aws.queue_arn(queue),
                    "Condition": {"ArnEquals": {"aws:SourceArn": sorted(topic_arns)}},
                }
            ],
        },
        sort_keys=True,
    )


def _subscribe(
    sns: object, topic_arn: str, queue_arn: str, filter_policy: str | None, report: ProvisionReport
) -> None:
    name = f"{topic_arn.rsplit(':', 1)[-1]} → {queue_arn.rsplit(':', 1)[-1]}"
    wanted = {"RawMessageDelivery": "false"}
    if filter_policy:
        wanted["FilterPolicy"] = filter_policy
    existing = None
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):  # type: ignore[attr-defined]
        for sub in page["Subscriptions"]:
            if sub["Endpoint"] == queue_arn and sub["Protocol"] == "sqs":
                existing = sub["SubscriptionArn"]
    if existing is None:
        sns.subscribe(  # type: ignore[attr-defined]
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=wanted
        )
        report.add("subscription", name, CREATED)
        return
    current = sns.get_subscription_attributes(SubscriptionArn=existing)["Attributes"]  # type: ignore[attr-defined]
    action = UNCHANGED
    for key, value in wanted.items():
        if not _same(current.get(key), value):
            sns.set_subscription_attributes(  # type: ignore[attr-defined]
                SubscriptionArn=existing, AttributeName=key, AttributeValue=value
            )
            action = UPDATED
    if not filter_policy and current.get("FilterPolicy"):
        sns.set_subscription_attributes(  # type: ignore[attr-defined]
            SubscriptionArn=existing, AttributeName="FilterPolicy", AttributeValue=""
        )
        action = UPDATED
    report.add("subscription", name, action)
