"""Back-in-stock emails: arrivals from the notify queue, and the emails they make due.

An arrival (`stock.replenished`) is recorded in the database as the product's confirmed
alerts being due, and its message is deleted at once: the SQS receive count no longer
decides how long notices are tried. The emails due (confirmations, back-in-stock notices)
go out from the same loop, with back-off while the mail server fails (inventory.alerts).
"""

import logging
from time import monotonic

from django.conf import settings

from factory_bridge import events
from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.messages import read_envelope
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services import pollers
from factory_bridge.services.dlq import dead_letter, record_failure
from inventory.alerts import record_arrival, send_due_mail
from nudged.logs import log_context

logger = logging.getLogger(__name__)

# Seconds one arrival may take at worst to record (a database write, an SQS delete).
MESSAGE_BUDGET = 5.0


def consume_notify(*, wait: int) -> int:
    """Record one batch of arrivals, then send the emails due; return how many were sent.

    Before each message the loop's lease is beaten, and the rest of the batch is hidden again
    for a full visibility timeout when less than one message's worst case is left; at the
    loop's deadline the rest is released for its successor, and no email is started.
    """
    queue = SqsQueue(settings.SQS_NOTIFY_QUEUE)
    visibility = settings.SQS_VISIBILITY_TIMEOUT
    batch = queue.receive(wait=wait, visibility=visibility)
    hidden_until = monotonic() + visibility
    handled = 0
    while batch:
        # The first message goes right after the round's own beat.
        if handled and not pollers.keep_going():
            queue.change_visibility_batch(batch, 0)
            return 0
        if hidden_until - monotonic() < MESSAGE_BUDGET:
            lost = queue.change_visibility_batch(batch, visibility)
            hidden_until = monotonic() + visibility
            for message_id in lost:
                logger.warning("message=%s no longer held; left to its new reader", message_id)
            batch = [m for m in batch if m.message_id not in lost]
            if not batch:
                break
        message, *batch = batch
        _handle(queue, message)
        handled += 1
    return send_due_mail(keep_going=pollers.keep_going)


def _handle(queue: SqsQueue, message: ReceivedMessage) -> None:
    with log_context(sqs_message=message.message_id):
        _handle_one(queue, message)


def _handle_one(queue: SqsQueue, message: ReceivedMessage) -> None:
    try:
        handle_arrival_message(message)
    except UnreadableMessage as exc:
        dead_letter(queue, message, str(exc))
        return
    except Exception as exc:
        logger.exception("arrival message=%s failed", message.message_id)
        try:
            record_failure(message, queue.name, f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("could not record the failure of message=%s", message.message_id)
        return
    try:
        queue.delete(message)
    except QueueError as exc:
        logger.warning(
            "could not delete message=%s; it will be redelivered: %s", message.message_id, exc
        )


def handle_arrival_message(message: ReceivedMessage) -> int:
    """Make the confirmed alerts of the arrived product due; return how many."""
    envelope = read_envelope(message.body)
    if envelope.event_type != events.STOCK_REPLENISHED:
        raise UnreadableMessage(f"unexpected event type {envelope.event_type[:40]!r}")
    if not envelope.sku:
        raise UnreadableMessage(f"{envelope.event_type} names no SKU")
    due = record_arrival(sku=envelope.sku)
    logger.info("arrival event=%s sku=%s: %s alert(s) due", envelope.event_id, envelope.sku, due)
    return due
