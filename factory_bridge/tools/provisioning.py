"""Create or update Nudged's SNS topics, SQS queues and subscriptions (idempotent).

What to create is declared in factory_bridge/infrastructure.py, which the CloudFormation
template is written from too.
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from factory_bridge import aws
from factory_bridge.infrastructure import (
    FILTER_POLICY_SCOPE,
    MAX_RECEIVE_COUNT,
    QUEUES,
    RAW_MESSAGE_DELIVERY,
    SUBSCRIPTIONS,
    TOPICS,
    Parameter,
    Queue,
    Subscription,
    sources_of,
    topics_of,
)
from factory_bridge.tools.policies import (
    filter_policy,
    queue_policy,
    redrive_allow_policy,
    redrive_policy,
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
    topic_arns: dict[str, str] = {}
    for topic in TOPICS:
        arn = sns.create_topic(Name=topic.name)["TopicArn"]
        topic_arns[topic.logical_id] = arn
        report.add("topic", topic.name, UNCHANGED if arn in existing_topics else CREATED)
    for queue in QUEUES:
        _queue(sqs, queue.name, queue_attributes(queue, topic_arns), report)
    for subscription in SUBSCRIPTIONS:
        topic_arn = topic_arns[subscription.topic.logical_id]
        _subscribe(sns, topic_arn, _queue_arn(subscription.queue), subscription, report)
    logger.info("provisioned changed=%s", report.changed)
    return report


def queue_attributes(queue: Queue, topic_arns: dict[str, str]) -> dict[str, str]:
    """The SQS attributes `queue` should have, as SetQueueAttributes takes them."""
    wanted = {key: str(_value(value)) for key, value in queue.attributes.items()}
    if queue.dead_letter_queue:
        policy = redrive_policy(
            dead_letter_arn=_queue_arn(queue.dead_letter_queue),
            max_receive_count=_value(MAX_RECEIVE_COUNT),
        )
        wanted["RedrivePolicy"] = json.dumps(policy)
    if sources := sources_of(queue):
        policy = redrive_allow_policy(source_arns=[_queue_arn(q) for q in sources])
        wanted["RedriveAllowPolicy"] = json.dumps(policy)
    if topics := topics_of(queue):
        policy = queue_policy(
            queue_arn=_queue_arn(queue), topic_arns=[topic_arns[t.logical_id] for t in topics]
        )
        wanted["Policy"] = json.dumps(policy, sort_keys=True)
    return wanted


def _value(value: int | Parameter) -> int:
    return getattr(settings, value.setting) if isinstance(value, Parameter) else value


def _queue_arn(queue: Queue) -> str:
    return aws.queue_arn(queue.name)


def _existing_topics(sns: Any) -> set[str]:
    arns: set[str] = set()
    for page in sns.get_paginator("list_topics").paginate():
        arns |= {t["TopicArn"] for t in page["Topics"]}
    return arns


def _queue(sqs: Any, name: str, wanted: dict[str, str], report: ProvisionReport) -> None:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        sqs.create_queue(QueueName=name, Attributes=wanted)
        report.add("queue", name, CREATED)
        return
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    stale = {k for k, v in wanted.items() if not _same(current.get(k), v)}
    stale -= _unknown_attributes(sqs, url, stale - set(current))
    if stale:
        # All wanted attributes, not only the stale ones: some endpoints drop the
        # attributes a SetQueueAttributes call leaves out.
        sqs.set_queue_attributes(QueueUrl=url, Attributes=wanted)
    report.add("queue", name, UPDATED if stale else UNCHANGED)


def _unknown_attributes(sqs: Any, url: str, missing: set[str]) -> set[str]:
    """The attributes among `missing` the endpoint does not know by name.

    Such an attribute is applied when the queue is created but cannot be compared afterwards:
    moto accepts RedriveAllowPolicy and never reports it. Real AWS knows every one.
    """
    unknown = set()
    for name in sorted(missing):
        try:
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[name])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InvalidAttributeName":
                raise
            logger.info("endpoint does not report %s; it is set only on creation", name)
            unknown.add(name)
    return unknown


def _same(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    try:
        return json.loads(current) == json.loads(wanted)
    except ValueError:
        return current == wanted


def _subscribe(
    sns: Any,
    topic_arn: str,
    queue_arn: str,
    subscription: Subscription,
    report: ProvisionReport,
) -> None:
    name = f"{topic_arn.rsplit(':', 1)[-1]} → {queue_arn.rsplit(':', 1)[-1]}"
    wanted = {"RawMessageDelivery": str(RAW_MESSAGE_DELIVERY).lower()}
    if events := filter_policy(subscription):
        wanted["FilterPolicy"] = json.dumps(events)
        wanted["FilterPolicyScope"] = FILTER_POLICY_SCOPE
    existing = None
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            if sub["Endpoint"] == queue_arn and sub["Protocol"] == "sqs":
                existing = sub["SubscriptionArn"]
    if existing is None:
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=wanted)
        report.add("subscription", name, CREATED)
        return
    current = sns.get_subscription_attributes(SubscriptionArn=existing)["Attributes"]
    action = UNCHANGED
    for key, value in wanted.items():
        if not _same(current.get(key), value):
            sns.set_subscription_attributes(
                SubscriptionArn=existing, AttributeName=key, AttributeValue=value
            )
            action = UPDATED
    if not events and current.get("FilterPolicy"):
        sns.set_subscription_attributes(
            SubscriptionArn=existing, AttributeName="FilterPolicy", AttributeValue=""
        )
        action = UPDATED
    report.add("subscription", name, action)
