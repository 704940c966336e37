"""Back-in-stock emails: arrivals from the notify queue, and the emails they make due.

An arrival (`stock.replenished`) is recorded in the database as the product's confirmed
alerts being due, and its message is deleted at once: the SQS receive count no longer
decides how long notices are tried. The emails due (confirmations, back-in-stock notices)
go out from the same loop, with back-off while the mail server fails (inventory.alerts).
"""

import logging

from django.conf import settings

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.messages import read_envelope
from factory_bridge.queues import ReceivedMessage, SqsQueue
from factory_bridge.services.sqs_consumer import consume_batch
from inventory import events
from inventory.alerts import record_arrival, send_due_mail
from nudged.core import leases

logger = logging.getLogger(__name__)

# Seconds one arrival may take at worst to record (a database write, an SQS delete).
MESSAGE_BUDGET = 5.0
RECORDED = "recorded"


def consume_notify(*, wait: int) -> int:
    """Record one batch of arrivals, then send the emails due; return how many were sent.

    At the loop's deadline the rest of the batch is released for its successor, and no email
    is started.
    """
    report = consume_batch(
        SqsQueue(settings.SQS_NOTIFY_QUEUE),
        wait=wait,
        budget=MESSAGE_BUDGET,
        handle=_handle,
        kind="arrival",
    )
    if report.released:
        return 0
    return send_due_mail(keep_going=leases.keep_going)


def _handle(message: ReceivedMessage) -> str:
    handle_arrival_message(message)
    return RECORDED


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
