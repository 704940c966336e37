"""The restock queue's consumer: depletions and reorder decisions become factory orders."""

from django.conf import settings

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.factory import FactoryError
from factory_bridge.messages import read_envelope
from factory_bridge.queues import ReceivedMessage, SqsQueue
from factory_bridge.services.restock.factory_order import order_restock
from factory_bridge.services.sqs_consumer import ConsumeReport, RetryLater, consume_batch
from inventory import events

# Seconds one message may take beyond its factory call (database, SQS).
MESSAGE_MARGIN = 2.0
# Longest depletion event id taken (ours are 36): the restock's key adds a re-order suffix.
EVENT_ID_MAX = 64


def consume_restock(*, wait: int) -> ConsumeReport:
    """Receive one batch of depletions from the restock queue and order each from the factory.

    A depletion the factory did not accept stays in the queue: it comes back after the
    visibility timeout, and after SQS_MAX_RECEIVE_COUNT receives SQS moves it to the DLQ.
    """
    return consume_batch(
        SqsQueue(settings.SQS_RESTOCK_QUEUE),
        wait=wait,
        budget=message_budget(),
        handle=_handle,
        kind="depletion",
    )


def message_budget() -> float:
    """Seconds one message may take at worst: the factory call, plus the database and SQS."""
    return settings.FACTORY_CONNECT_TIMEOUT + settings.FACTORY_READ_TIMEOUT + MESSAGE_MARGIN


def _handle(message: ReceivedMessage) -> str:
    try:
        return handle_depletion_message(message)
    except FactoryError as exc:
        raise RetryLater(f"factory {exc}") from exc


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
