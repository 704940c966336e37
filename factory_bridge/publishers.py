"""Event publishers: the boundary between the outbox and SNS, chosen by EVENT_PUBLISHER."""

import json
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from factory_bridge import aws
from nudged.core.loading import load

SNS_BATCH_SIZE = 10


@dataclass(frozen=True)
class Message:
    id: str
    subject: str
    body: dict
    attributes: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    id: str
    message_id: str = ""
    error: str = ""
    # SNS refused this message itself: sending it again as it is fails the same way.
    rejected: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


class PublishError(Exception):
    """The whole call failed (endpoint unreachable, throttled, credentials, or refused)."""

    def __init__(self, message: str, *, rejected: bool = False) -> None:
        super().__init__(message)
        # SNS answered and refused the request (a bad attribute, a missing topic); otherwise
        # it was not reached or asked to come back later, and the messages are not at fault.
        self.rejected = rejected


class Publisher(Protocol):
    # The longest one `publish` call can take; the relay's claim lease is derived from it.
    max_publish_seconds: float

    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]: ...


def _sns_attributes(attributes: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


# Refusals that say "later" or "not you", not "never": the request may pass when sent again.
_RETRYABLE_CODES = {
    "Throttled",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KMSThrottling",
}
_RETRYABLE_STATUSES = {401, 403, 429}


def _refused(exc: ClientError) -> bool:
    """Whether SNS refused the request for what it contains, so that resending cannot help."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return (
        error.get("Type") == "Sender"
        and 400 <= status < 500
        and status not in _RETRYABLE_STATUSES
        and error.get("Code") not in _RETRYABLE_CODES
    )


class SnsPublisher:
    """Publishes to SNS, with PublishBatch for more than one message."""

    # At most len(messages) / SNS_BATCH_SIZE calls, plus one STS call for the account id the
    # first time a process builds a topic's ARN.
    max_publish_seconds = 2 * aws.max_call_seconds()

    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            sns = aws.client("sns")
            arn = aws.topic_arn(topic)
            for start in range(0, len(messages), SNS_BATCH_SIZE):
                chunk = messages[start : start + SNS_BATCH_SIZE]
                if len(chunk) == 1:
                    outcomes.append(self._publish_one(sns, arn, chunk[0]))
                else:
                    outcomes.extend(self._publish_batch(sns, arn, chunk))
        except ClientError as exc:
            raise PublishError(str(exc), rejected=_refused(exc)) from exc
        except BotoCoreError as exc:
            raise PublishError(str(exc)) from exc
        return outcomes

    def _publish_one(self, sns: Any, arn: str, message: Message) -> Outcome:
        kwargs = self._entry(message)
        kwargs.pop("Id")
        answer = sns.publish(TopicArn=arn, **kwargs)
        return Outcome(id=message.id, message_id=answer["MessageId"])

    def _publish_batch(self, sns: Any, arn: str, chunk: list[Message]) -> list[Outcome]:
        answer = sns.publish_batch(
            TopicArn=arn, PublishBatchRequestEntries=[self._entry(m) for m in chunk]
        )
        outcomes = [Outcome(id=ok["Id"], message_id=ok["MessageId"]) for ok in answer["Successful"]]
        outcomes += [
            Outcome(
                id=bad["Id"],
                error=f"{bad.get('Code')}: {bad.get('Message', '')}",
                rejected=bool(bad.get("SenderFault")) and bad.get("Code") not in _RETRYABLE_CODES,
            )
            for bad in answer.get("Failed", [])
        ]
        return outcomes

    @staticmethod
    def _entry(message: Message) -> dict:
        entry = {
            "Id": message.id,
            "Message": json.dumps(message.body, ensure_ascii=False),
            "MessageAttributes": _sns_attributes(message.attributes),
        }
        if message.subject:
            entry["Subject"] = message.subject
        return entry


class InMemoryPublisher:
    """Keeps messages in `sent`, for unit tests of pure logic."""

    sent: list[tuple[str, Message]] = []
    max_publish_seconds = 0.0

    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]:
        self.sent.extend((topic, m) for m in messages)
        return [Outcome(id=m.id, message_id=f"mem-{m.id}") for m in messages]


def get_publisher() -> Publisher:
    return load(settings.EVENT_PUBLISHER)()
