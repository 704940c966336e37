"""The SQS boundary: receive, delete, send and inspect queues by name."""

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from factory_bridge import aws

SQS_BATCH_SIZE = 10


class QueueError(Exception):
    """SQS could not be reached or refused the call."""


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, Any] = field(default_factory=dict)
    message_attributes: dict[str, Any] = field(default_factory=dict)


def _call(method: str, *, probe: bool = False, **kwargs: Any) -> dict:
    client = aws.probe_client("sqs") if probe else aws.client("sqs")
    try:
        return getattr(client, method)(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise QueueError(f"SQS {method} failed: {exc}") from exc


def _url(queue: str) -> str:
    try:
        return aws.queue_url(queue)
    except (BotoCoreError, ClientError) as exc:
        raise QueueError(f"SQS queue {queue!r} is not reachable: {exc}") from exc


class SqsQueue:
    """One SQS queue, addressed by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def url(self) -> str:
        return _url(self.name)

    def receive(
        self, *, max_messages: int = SQS_BATCH_SIZE, wait: int = 0, visibility: int | None = None
    ) -> list[ReceivedMessage]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility is not None:
            kwargs["VisibilityTimeout"] = visibility
        answer = _call("receive_message", **kwargs)
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                attributes=m.get("Attributes", {}),
                message_attributes=m.get("MessageAttributes", {}),
            )
            for m in answer.get("Messages", [])
        ]

    def delete(self, message: ReceivedMessage) -> None:
        _call("delete_message", QueueUrl=self.url, ReceiptHandle=message.receipt_handle)

    def delete_batch(self, messages: list[ReceivedMessage]) -> set[str]:
        """Delete messages; return the ids that could not be deleted."""
        failed: set[str] = set()
        for start in range(0, len(messages), SQS_BATCH_SIZE):
            chunk = messages[start : start + SQS_BATCH_SIZE]
            answer = _call(
                "delete_message_batch",
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
                ],
            )
            failed |= {chunk[int(bad["Id"])].message_id for bad in answer.get("Failed", [])}
        return failed

    def send(self, *, body: str, message_attributes: dict[str, Any] | None = None) -> str:
        kwargs: dict[str, Any] = {"QueueUrl": self.url, "MessageBody": body}
        if message_attributes:
            kwargs["MessageAttributes"] = message_attributes
        return _call("send_message", **kwargs)["MessageId"]

    def send_batch(self, entries: list[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
        """Send (key, body, attributes) entries; return {key: new message id} for those sent."""
        sent: dict[str, str] = {}
        for start in range(0, len(entries), SQS_BATCH_SIZE):
            chunk = entries[start : start + SQS_BATCH_SIZE]
            request = []
            for i, (_, body, attributes) in enumerate(chunk):
                entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
                if attributes:
                    entry["MessageAttributes"] = attributes
                request.append(entry)
            answer = _call("send_message_batch", QueueUrl=self.url, Entries=request)
            for ok in answer.get("Successful", []):
                sent[chunk[int(ok["Id"])][0]] = ok["MessageId"]
        return sent

    def change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        _call(
            "change_message_visibility",
            QueueUrl=self.url,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=seconds,
        )

    def change_visibility_batch(self, messages: list[ReceivedMessage], seconds: int) -> set[str]:
        """Hide messages for `seconds` from now (0 shows them); return the ids that failed."""
        failed: set[str] = set()
        for start in range(0, len(messages), SQS_BATCH_SIZE):
            chunk = messages[start : start + SQS_BATCH_SIZE]
            answer = _call(
                "change_message_visibility_batch",
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
            failed |= {chunk[int(bad["Id"])].message_id for bad in answer.get("Failed", [])}
        return failed

    def counts(self, *, probe: bool = False) -> dict[str, int]:
        """Approximate visible, in-flight and delayed messages.

        `probe`: one quick attempt (short timeouts, no retry), the queue's URL included, for
        callers that must answer whatever SQS does.
        """
        if probe:
            url = _call("get_queue_url", probe=True, QueueName=self.name)["QueueUrl"]
        else:
            url = self.url
        answer = _call(
            "get_queue_attributes",
            probe=probe,
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {
            "visible": int(answer.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(answer.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(answer.get("ApproximateNumberOfMessagesDelayed", 0)),
        }
