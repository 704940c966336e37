"""What Nudged needs on AWS, declared once: its topics, its queues and their dead-letter
queues, and the subscriptions between them.

Everything that lists them reads this: `provision_aws` applies it through the API
(tools/provisioning.py), `aws_template` writes it as the CloudFormation template
deploy/nudged.yaml (tools/cloudformation.py), and `queue_stats`, /metrics, the DLQ watcher,
redrive and discard, the staff dashboard and the cached AWS clients find their queues here.
Each resource's name is a setting.
"""

from dataclasses import dataclass, field

from django.conf import settings

from inventory.events import STOCK_DEPLETED, STOCK_LOW, STOCK_REPLENISHED
from nudged.core.models import OutboxEvent

# Every name is "<prefix>-<suffix>": the settings' default names use this prefix, the template
# takes it as a parameter.
DEFAULT_PREFIX = "nudged"
# SQS's default, stated: a message is dropped 4 days after it was first sent.
RETENTION = 345600
# Dead letters are kept as long as SQS allows (14 days) for staff to inspect and redrive; a
# message keeps its first send time in the DLQ, so this must be longer than RETENTION.
DEAD_LETTER_RETENTION = 1209600
# Consumers read the SNS envelope, as the original consumers did.
RAW_MESSAGE_DELIVERY = False
FILTER_POLICY_SCOPE = "MessageAttributes"


@dataclass(frozen=True)
class Parameter:
    """A number the operator chooses: a Django setting locally, a template parameter on AWS."""

    name: str
    setting: str
    default: int
    minimum: int
    maximum: int
    description: str


MAX_RECEIVE_COUNT = Parameter(
    "MaxReceiveCount",
    "SQS_MAX_RECEIVE_COUNT",
    5,
    1,
    1000,
    "Receives before a message moves to its dead-letter queue",
)
VISIBILITY_TIMEOUT = Parameter(
    "VisibilityTimeout",
    "SQS_VISIBILITY_TIMEOUT",
    30,
    0,
    43200,
    "Seconds a received message stays hidden (above the factory's timeouts + 2)",
)
OPS_RETENTION = Parameter(
    "OpsRetention",
    "SQS_OPS_RETENTION",
    345600,
    60,
    1209600,
    "Seconds the operations feed keeps events nobody read",
)
PARAMETERS = (MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT, OPS_RETENTION)


@dataclass(frozen=True)
class Topic:
    logical_id: str
    setting: str
    suffix: str
    # The outbox's name for it (OutboxEvent.topic).
    key: str

    @property
    def name(self) -> str:
        """Its name in this deployment (its setting)."""
        return getattr(settings, self.setting)


@dataclass(frozen=True)
class Queue:
    logical_id: str
    setting: str
    suffix: str
    # SQS attributes: a number, or the parameter that chooses it.
    attributes: dict[str, int | Parameter] = field(default_factory=dict)
    dead_letter_queue: "Queue | None" = None
    # What the app does with the queue, and so all its role may do (batch calls included:
    # DeleteMessageBatch is authorised as sqs:DeleteMessage, and so on).
    actions: tuple[str, ...] = ()
    # On AWS, an alarm when the oldest message waits longer than the template's threshold.
    age_alarm: bool = False

    @property
    def name(self) -> str:
        """Its name in this deployment (its setting)."""
        return getattr(settings, self.setting)


@dataclass(frozen=True)
class Subscription:
    logical_id: str
    topic: Topic
    queue: Queue
    # EventType values delivered; empty: every event of the topic.
    events: tuple[str, ...] = ()


# Every queue is found by name and counted (queue_stats, /healthz).
_FIND_AND_COUNT = ("sqs:GetQueueUrl", "sqs:GetQueueAttributes")
# Consumers receive and delete; a redrive sends dead letters back to their source queue.
_CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", *_FIND_AND_COUNT)
# The restock and notify pollers and the DLQ watcher hide and show again what they hold
# (ChangeMessageVisibility); an unreadable message is sent straight to its DLQ (SendMessage).
_CONSUME_AND_HOLD = ("sqs:ChangeMessageVisibility", *_CONSUME)

STOCK_TOPIC = Topic("StockTopic", "SNS_STOCK_TOPIC", "stock-events", OutboxEvent.Topic.STOCK)
SALES_TOPIC = Topic("SalesTopic", "SNS_SALES_TOPIC", "sales-events", OutboxEvent.Topic.SALES)
TOPICS = (STOCK_TOPIC, SALES_TOPIC)

RESTOCK_DLQ = Queue(
    "RestockDeadLetterQueue",
    "SQS_RESTOCK_DLQ",
    "restock-dlq",
    {"MessageRetentionPeriod": DEAD_LETTER_RETENTION},
    actions=_CONSUME_AND_HOLD,
)
RESTOCK_QUEUE = Queue(
    "RestockQueue",
    "SQS_RESTOCK_QUEUE",
    "restock",
    {"VisibilityTimeout": VISIBILITY_TIMEOUT, "MessageRetentionPeriod": RETENTION},
    dead_letter_queue=RESTOCK_DLQ,
    actions=_CONSUME_AND_HOLD,
    age_alarm=True,
)
NOTIFY_DLQ = Queue(
    "NotifyDeadLetterQueue",
    "SQS_NOTIFY_DLQ",
    "notify-dlq",
    {"MessageRetentionPeriod": DEAD_LETTER_RETENTION},
    actions=_CONSUME_AND_HOLD,
)
NOTIFY_QUEUE = Queue(
    "NotifyQueue",
    "SQS_NOTIFY_QUEUE",
    "notify",
    {"VisibilityTimeout": VISIBILITY_TIMEOUT, "MessageRetentionPeriod": RETENTION},
    dead_letter_queue=NOTIFY_DLQ,
    actions=_CONSUME_AND_HOLD,
)
OPS_QUEUE = Queue(
    "OpsQueue",
    "SQS_OPS_QUEUE",
    "ops",
    {"MessageRetentionPeriod": OPS_RETENTION},
    actions=_FIND_AND_COUNT,
)
# Each dead-letter queue before its source queue, whose redrive policy names it.
QUEUES = (RESTOCK_DLQ, RESTOCK_QUEUE, NOTIFY_DLQ, NOTIFY_QUEUE, OPS_QUEUE)

SUBSCRIPTIONS = (
    Subscription("StockToRestock", STOCK_TOPIC, RESTOCK_QUEUE, (STOCK_DEPLETED, STOCK_LOW)),
    Subscription("StockToNotify", STOCK_TOPIC, NOTIFY_QUEUE, (STOCK_REPLENISHED,)),
    Subscription("StockToOps", STOCK_TOPIC, OPS_QUEUE),
    Subscription("SalesToOps", SALES_TOPIC, OPS_QUEUE),
)


# The settings that name the resources.
NAME_SETTINGS = frozenset(resource.setting for resource in (*TOPICS, *QUEUES))


def topic_name(key: str) -> str:
    """The name in this deployment of the topic the outbox calls `key` ("stock", "sales")."""
    [topic] = [t for t in TOPICS if t.key == key]
    return topic.name


def queue_names() -> list[str]:
    """Every declared queue's name in this deployment, each dead-letter queue after its source."""
    sources = [queue for queue in QUEUES if not sources_of(queue)]
    return [
        queue.name
        for source in sources
        for queue in (source, source.dead_letter_queue)
        if queue is not None
    ]


def dead_letter_queues() -> dict[str, str]:
    """Each queue that has a dead-letter queue, and that DLQ, by their names in this deployment."""
    return {q.name: q.dead_letter_queue.name for q in QUEUES if q.dead_letter_queue is not None}


def topics_of(queue: Queue) -> list[Topic]:
    """The topics that deliver to `queue`."""
    return [s.topic for s in SUBSCRIPTIONS if s.queue == queue]


def sources_of(dead_letter_queue: Queue) -> list[Queue]:
    """The queues whose dead letters go to `dead_letter_queue`."""
    return [q for q in QUEUES if q.dead_letter_queue == dead_letter_queue]
