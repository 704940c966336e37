"""The restock queue's consumer: depletions and reorder decisions become factory orders."""

import logging
from dataclasses import dataclass, field
from time import monotonic

from django.conf import settings

from factory_bridge import events
from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.factory import FactoryError
from factory_bridge.messages import read_envelope
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services import pollers
from factory_bridge.services.dlq import dead_letter, record_failure
from factory_bridge.services.restock.factory_order import order_restock
from nudged.logs import log_context

logger = logging.getLogger(__name__)

# Seconds one message may take beyond its factory call (database, SQS).
MESSAGE_MARGIN = 2.0
# Longest depletion event id taken (ours are 36): the restock's key adds a re-order suffix.
EVENT_ID_MAX = 64


@dataclass
class ConsumeReport:
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def consume_restock(*, wait: int) -> ConsumeReport:
    """Receive one batch of depletions from the restock queue and order each from the factory.

    Each message is handled on its own: whatever goes wrong with one is recorded for it and
    the batch goes on. Before each message the rest of the batch is hidden again for a full
    visibility timeout when less than one message's worst case is left, so that no message
    reappears (and reaches a second consumer) while this one still holds it.
    """
    queue = SqsQueue(settings.SQS_RESTOCK_QUEUE)
    report = ConsumeReport()
    visibility = settings.SQS_VISIBILITY_TIMEOUT
    batch = queue.receive(wait=wait, visibility=visibility)
    hidden_until = monotonic() + visibility
    handled = 0
    while batch:
        # The first message goes right after the round's own beat: releasing it unhandled
        # would cost it one of its receives.
        if handled and not pollers.keep_going():
            # The loop's time is up or its lease is gone: its successor takes these at once.
            queue.change_visibility_batch(batch, 0)
            report.count("released")
            break
        if hidden_until - monotonic() < message_budget():
            lost = queue.change_visibility_batch(batch, visibility)
            hidden_until = monotonic() + visibility
            for message_id in lost:
                logger.warning("message=%s no longer held; left to its new reader", message_id)
            batch = [m for m in batch if m.message_id not in lost]
            if not batch:
                break
        message, *batch = batch
        report.count(_handle(queue, message))
        handled += 1
    return report


def message_budget() -> float:
    """Seconds one message may take at worst: the factory call, plus the database and SQS."""
    return settings.FACTORY_CONNECT_TIMEOUT + settings.FACTORY_READ_TIMEOUT + MESSAGE_MARGIN


def _handle(queue: SqsQueue, message: ReceivedMessage) -> str:
    """Handle one message and say how it went; no error escapes to the rest of the batch."""
    with log_context(sqs_message=message.message_id):
        return _handle_one(queue, message)


def _handle_one(queue: SqsQueue, message: ReceivedMessage) -> str:
    try:
        outcome = handle_depletion_message(message)
    except UnreadableMessage as exc:
        dead_letter(queue, message, str(exc))
        return "unreadable"
    except FactoryError as exc:
        # Left in the queue: it comes back after the visibility timeout, and after
        # SQS_MAX_RECEIVE_COUNT receives SQS moves it to the DLQ.
        _note_failure(queue, message, f"factory {exc}")
        return "retry"
    except Exception as exc:
        logger.exception("depletion message=%s failed", message.message_id)
        _note_failure(queue, message, f"{type(exc).__name__}: {exc}")
        return "retry"
    try:
        queue.delete(message)
    except QueueError as exc:
        logger.warning(
            "could not delete message=%s; it will be redelivered: %s", message.message_id, exc
        )
    return outcome


def _note_failure(queue: SqsQueue, message: ReceivedMessage, error: str) -> None:
    try:
        record_failure(message, queue.name, error)
    except Exception:
        logger.exception("could not record the failure of message=%s", message.message_id)


def handle_depletion_message(message: ReceivedMessage) -> str:
    envelope = read_envelope(message.body)
    if envelope.event_type not in (events.STOCK_LOW, events.STOCK_DEPLETED):
        raise UnreadableMessage(f"unexpected event type {envelope.event_type[:40]!r}")
    if not envelope.sku:
        raise UnreadableMessage(f"{envelope.event_type} names no SKU")
    if len(envelope.event_id) > EVENT_ID_MAX:
        raise UnreadableMessage(
            f"event id longer than {EVENT_ID_MAX} characters: {envelope.event_id[:40]!r}…"
        )
    return order_restock(envelope=envelope, sqs_message_id=message.message_id)
