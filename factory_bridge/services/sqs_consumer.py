"""The skeleton of every queue consumer: one batch received, held, and handled a message at a
time. The restock and notify loops each give it their queue and their handler.

Each message is handled on its own: whatever goes wrong with one is recorded for it and the
batch goes on. Before each message the loop's lease is beaten, and the rest of the batch is
hidden again for a full visibility timeout when less than one message's worst case is left,
so that no message reappears (and reaches a second consumer) while this one still holds it.
At the loop's deadline, or once it lost its lease, the rest is released for its successor.
A message no handler can read goes to its DLQ from here (`dead_letter`); what happens in the
DLQs themselves (watching, recording, redrive, discard) is services/dlq.py's.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.infrastructure import dead_letter_queues
from factory_bridge.messages import fingerprint
from factory_bridge.models import MessageFailure
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from nudged.core import leases
from nudged.core.logs import log_context

logger = logging.getLogger(__name__)

UNREADABLE, RETRY, RELEASED = "unreadable", "retry", "released"


class RetryLater(Exception):
    """Leave the message in its queue, recording why: it comes back after the visibility
    timeout, and after SQS_MAX_RECEIVE_COUNT receives SQS moves it to the DLQ."""


@dataclass
class ConsumeReport:
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @property
    def released(self) -> bool:
        """Whether the loop stopped before the end of the batch and left the rest."""
        return RELEASED in self.outcomes


def consume_batch(
    queue: SqsQueue,
    *,
    wait: int,
    budget: float,
    handle: Callable[[ReceivedMessage], str],
    kind: str,
) -> ConsumeReport:
    """Receive one batch and `handle` each message; count the outcomes it returns.

    `budget`: seconds one message may take at worst. A message handled is deleted; one that
    raises UnreadableMessage goes straight to the DLQ; any other error leaves it in the queue
    (`kind` names it in the log: "depletion", "arrival").
    """
    report = ConsumeReport()
    visibility = settings.SQS_VISIBILITY_TIMEOUT
    batch = queue.receive(wait=wait, visibility=visibility)
    hidden_until = monotonic() + visibility
    handled = 0
    while batch:
        # The first message goes right after the round's own beat: releasing it unhandled
        # would cost it one of its receives.
        if handled and not leases.keep_going():
            # The loop's time is up or its lease is gone: its successor takes these at once.
            queue.change_visibility_batch(batch, 0)
            report.count(RELEASED)
            break
        if hidden_until - monotonic() < budget:
            lost = queue.change_visibility_batch(batch, visibility)
            hidden_until = monotonic() + visibility
            for message_id in lost:
                logger.warning("message=%s no longer held; left to its new reader", message_id)
            batch = [m for m in batch if m.message_id not in lost]
            if not batch:
                break
        message, *batch = batch
        with log_context(sqs_message=message.message_id):
            report.count(_handle(queue, message, handle, kind))
        handled += 1
    return report


def _handle(
    queue: SqsQueue, message: ReceivedMessage, handle: Callable[[ReceivedMessage], str], kind: str
) -> str:
    """Handle one message and say how it went; no error escapes to the rest of the batch."""
    try:
        outcome = handle(message)
    except UnreadableMessage as exc:
        dead_letter(queue, message, str(exc))
        return UNREADABLE
    except RetryLater as exc:
        _note_failure(queue, message, str(exc))
        return RETRY
    except Exception as exc:
        logger.exception("%s message=%s failed", kind, message.message_id)
        _note_failure(queue, message, f"{type(exc).__name__}: {exc}")
        return RETRY
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


def record_failure(message: ReceivedMessage, queue: str, error: str) -> None:
    """Remember why processing failed, for the failed-message view."""
    key = fingerprint(message.body)
    updated = MessageFailure.objects.filter(fingerprint=key).update(
        sqs_message_id=message.message_id,
        queue=queue,
        error=error[:4000],
        attempts=F("attempts") + 1,
        updated_at=timezone.now(),
    )
    if not updated:
        MessageFailure.objects.get_or_create(
            fingerprint=key,
            defaults={"sqs_message_id": message.message_id, "queue": queue, "error": error[:4000]},
        )


def dead_letter(queue: SqsQueue, message: ReceivedMessage, error: str) -> None:
    """Move an unprocessable message straight to its DLQ (send first, then delete)."""
    record_failure(message, queue.name, error)
    SqsQueue(dead_letter_queues()[queue.name]).send(
        body=message.body, message_attributes=message.message_attributes or None
    )
    queue.delete(message)
    logger.warning("message=%s sent to the DLQ: %s", message.message_id, error)
