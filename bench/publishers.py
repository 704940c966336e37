"""Publishers used only by the benchmarks."""

from botocore.exceptions import BotoCoreError, ClientError

from factory_bridge import aws
from factory_bridge.publishers import (
    SNS_BATCH_SIZE,
    Message,
    Outcome,
    PublishError,
    SnsPublisher,
)


class OneByOnePublisher(SnsPublisher):
    """SnsPublisher without PublishBatch: one Publish call per message, the yardstick."""

    max_publish_seconds = (SNS_BATCH_SIZE + 1) * aws.max_call_seconds()

    def publish(self, *, topic: str, messages: list[Message]) -> list[Outcome]:
        try:
            sns = aws.client("sns")
            arn = aws.topic_arn(topic)
            return [self._publish_one(sns, arn, message) for message in messages]
        except (BotoCoreError, ClientError) as exc:
            raise PublishError(str(exc)) from exc
