"""Back-in-stock emails: stock.replenished messages from the notify queue."""

import logging

from django.conf import settings

from factory_bridge import events
from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.messages import read_envelope
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services.dlq import dead_letter, record_failure
from inventory.alerts import send_back_in_stock
from nudged.logs import log_context

logger = logging.getLogger(__name__)


def consume_notify(*, wait: int) -> int:
    """Receive one batch of arrivals and email each product's waiting addresses; return sent.

    Each message is handled on its own and deleted only once its emails are out: a failure
    (SMTP down) leaves it to come back, and after SQS_MAX_RECEIVE_COUNT receives SQS moves it
    to the notify DLQ. Addresses already emailed are not emailed again (inventory.alerts).
    """
    queue = SqsQueue(settings.SQS_NOTIFY_QUEUE)
    sent = 0
    for message in queue.receive(wait=wait, visibility=settings.SQS_VISIBILITY_TIMEOUT):
        sent += _handle(queue, message)
    return sent


def _handle(queue: SqsQueue, message: ReceivedMessage) -> int:
    with log_context(sqs_message=message.message_id):
        return _handle_one(queue, message)


def _handle_one(queue: SqsQueue, message: ReceivedMessage) -> int:
    try:
        sent = handle_arrival_message(message)
    except UnreadableMessage as exc:
        dead_letter(queue, message, str(exc))
        return 0
    except Exception as exc:
        logger.exception("arrival message=%s failed", message.message_id)
        try:
            record_failure(message, queue.name, f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("could not record the failure of message=%s", message.message_id)
        return 0
    try:
        queue.delete(message)
    except QueueError as exc:
        logger.warning(
            "could not delete message=%s; it will be redelivered: %s", message.message_id, exc
        )
    return sent


def handle_arrival_message(message: ReceivedMessage) -> int:
    envelope = read_envelope(message.body)
    if envelope.event_type != events.STOCK_REPLENISHED:
        raise UnreadableMessage(f"unexpected event type {envelope.event_type[:40]!r}")
    if not envelope.sku:
        raise UnreadableMessage(f"{envelope.event_type} names no SKU")
    sent = send_back_in_stock(sku=envelope.sku)
    logger.info("arrival event=%s sku=%s: %s email(s)", envelope.event_id, envelope.sku, sent)
    return sent
