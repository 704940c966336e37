"""The policies of the declared resources, as AWS takes them: ARNs are plain strings when
provisioning and CloudFormation expressions in the template."""

from typing import Any

from factory_bridge.infrastructure import Subscription
from inventory.events import EVENT_TYPE_ATTRIBUTE


def redrive_policy(*, dead_letter_arn: Any, max_receive_count: Any) -> dict[str, Any]:
    return {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count}


def redrive_allow_policy(*, source_arns: list[Any]) -> dict[str, Any]:
    """Only the queue's own sources may use it as their dead-letter queue."""
    return {"redrivePermission": "byQueue", "sourceQueueArns": source_arns}


def queue_policy(*, queue_arn: Any, topic_arns: list[Any]) -> dict[str, Any]:
    """Allow the topics (and only them) to deliver to the queue, as real AWS requires."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowNudgedTopics",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arns}},
            }
        ],
    }


def filter_policy(subscription: Subscription) -> dict[str, list[str]] | None:
    if not subscription.events:
        return None
    return {EVENT_TYPE_ATTRIBUTE: list(subscription.events)}
