"""Reading the test queues directly with boto3, as an outside consumer would."""

import json
import uuid
from functools import cache
from typing import Any

import boto3
from django.conf import settings
from django.utils import timezone


@cache
def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name=settings.AWS_DEFAULT_REGION)


def queue_url(endpoint: str, queue: str) -> str:
    return sqs_client(endpoint).get_queue_url(QueueName=queue)["QueueUrl"]


def drain(endpoint: str, queue: str) -> list[dict[str, Any]]:
    """Receive and delete every message of `queue`, ten at a time, until a receive is empty."""
    sqs, url = sqs_client(endpoint), queue_url(endpoint, queue)
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        messages += batch
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return messages


def ops_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events in SNS notifications read from a queue: a sales batch unpacked into its own."""
    found: list[dict[str, Any]] = []
    for message in messages:
        body = json.loads(json.loads(message["Body"])["Message"])
        found += body["events"] if body["type"] == "sales.batch" else [body]
    return found


def messages_in(endpoint: str, queue: str) -> int:
    """How many messages `queue` holds, visible (moto's counts are exact)."""
    answer = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue_url(endpoint, queue), AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(answer["Attributes"]["ApproximateNumberOfMessages"])


def depletion_envelope(sku: str, *, factory_id: str = "FF-500293", quantity: int = 10) -> str:
    """A stock.depleted event wrapped the way SNS delivers it to SQS (raw delivery off)."""
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "stock.depleted",
        "occurred_at": timezone.now().isoformat(),
        "sku": sku,
        "factory_id": factory_id,
        "quantity": quantity,
        "stock": 0,
        "restock_quantity": quantity,
    }
    attributes = {
        "EventType": "stock.depleted",
        "MessageAttributeProductId": sku,
        "MessageAttributeFactoryId": factory_id,
        "MessageAttributeProductCnt": str(quantity),
        "MessageAttributeRequester": "nudged-shop",
    }
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": f"arn:aws:sns:ap-northeast-2:123456789012:{settings.SNS_STOCK_TOPIC}",
            "Subject": "도너츠 재고 부족",
            "Message": json.dumps(event, ensure_ascii=False),
            "Timestamp": timezone.now().isoformat(),
            "MessageAttributes": {
                name: {"Type": "String", "Value": value} for name, value in attributes.items()
            },
        },
        ensure_ascii=False,
    )
