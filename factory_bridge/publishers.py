"""Event publishers: the boundary between the outbox and SNS, chosen by EVENT_PUBLISHER."""

import json
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.utils.module_loading import import_string

from factory_bridge import aws

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

    @property
    def ok(self) -> bool:
        return not self.error


class PublishError(Exception):
    """The whole call failed (endpoint unreachable, throttled, credentials)."""


class Publisher(Protocol):
    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]: ...


def _sns_attributes(attributes: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


class SnsPublisher:
    """Publishes to SNS, with PublishBatch for more than one message."""

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
        except (BotoCoreError, ClientError) as exc:
            raise PublishError(str(exc)) from exc
        return outcomes

    def _publish_one(self, sns: object, arn: str, message: Message) -> Outcome:
        kwargs = self._entry(message)
        kwargs.pop("Id")
        answer = sns.publish(TopicArn=arn, **kwargs)  # type: ignore[attr-defined]
        return Outcome(id=message.id, message_id=answer["MessageId"])

    def _publish_batch(self, sns: object, arn: str, chunk: list[Message]) -> list[Outcome]:
        answer = sns.publish_batch(  # type: ignore[attr-defined]
            TopicArn=arn, PublishBatchRequestEntries=[self._entry(m) for m in chunk]
        )
        outcomes = [Outcome(id=ok["Id"], message_id=ok["MessageId"]) for ok in answer["Successful"]]
        outcomes += [
            Outcome(id=bad["Id"], error=f"{bad.get('Code')}: {bad.get('Message', '')}")
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

    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]:
        self.sent.extend((topic, m) for m in messages)
        return [Outcome(id=m.id, message_id=f"mem-{m.id}") for m in messages]


@cache
def _publisher_class(path: str) -> type:
    return import_string(path)


def get_publisher() -> Publisher:
    return _publisher_class(settings.EVENT_PUBLISHER)()
