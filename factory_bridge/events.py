"""Domain events: how they are built and written to the outbox."""

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from factory_bridge.models import OutboxEvent
from inventory.services import StockState

logger = logging.getLogger(__name__)

STOCK_DEPLETED = "stock.depleted"
STOCK_REPLENISHED = "stock.replenished"
ORDER_COMPLETED = "order.completed"
ORDER_REJECTED = "order.rejected"
EVENT_TYPE_ATTRIBUTE = "EventType"
DEPLETED_SUBJECT = "도너츠 재고 부족"


@dataclass(frozen=True)
class Event:
    topic: str
    event_type: str
    sku: str
    factory_id: str
    quantity: int
    body: dict[str, Any] = field(default_factory=dict)
    subject: str = ""


def depleted(*, stock: StockState) -> Event:
    """A product ran out."""
    return Event(
        topic=OutboxEvent.Topic.STOCK,
        event_type=STOCK_DEPLETED,
        sku=stock.sku,
        factory_id=stock.factory_code,
        quantity=stock.restock_quantity,
        body={"stock": stock.remaining, "restock_quantity": stock.restock_quantity},
        subject=DEPLETED_SUBJECT,
    )


def replenished(*, product: Any, quantity: int, restock_id: int) -> Event:
    return Event(
        topic=OutboxEvent.Topic.STOCK,
        event_type=STOCK_REPLENISHED,
        sku=product.sku,
        factory_id=product.factory.code,
        quantity=quantity,
        body={"stock": product.stock, "restock_id": restock_id},
    )


def order_placed(*, order: Any, stock: StockState) -> Event:
    """An order was completed or rejected; `stock` is the product's state right after it."""
    completed = order.status == "completed"
    return Event(
        topic=OutboxEvent.Topic.SALES,
        event_type=ORDER_COMPLETED if completed else ORDER_REJECTED,
        sku=stock.sku,
        factory_id=stock.factory_code,
        quantity=order.quantity,
        body={"order_id": order.pk, "status": order.status, "stock": stock.remaining},
    )


def record(events: list[Event]) -> list[OutboxEvent]:
    """Write events to the outbox in the caller's transaction; relay them after commit."""
    if not settings.EVENTS_ENABLED or not events:
        return []
    now = timezone.now()
    rows = [_row(event, now) for event in events]
    OutboxEvent.objects.bulk_create(rows)
    from factory_bridge.services.outbox import trigger_relay

    transaction.on_commit(trigger_relay)
    return rows


def _row(event: Event, now: Any) -> OutboxEvent:
    row = OutboxEvent(
        topic=event.topic,
        event_type=event.event_type,
        subject=event.subject,
        sku=event.sku,
        created_at=now,
        next_attempt_at=now,
    )
    row.body = {
        "event_id": str(row.id),
        "type": event.event_type,
        "occurred_at": now.isoformat(),
        "sku": event.sku,
        "factory_id": event.factory_id,
        "quantity": event.quantity,
        **event.body,
    }
    # SNS rejects a message attribute with an empty value, so every value is a non-empty string.
    row.attributes = {
        EVENT_TYPE_ATTRIBUTE: event.event_type,
        "MessageAttributeProductId": event.sku,
        "MessageAttributeFactoryId": event.factory_id,
        "MessageAttributeProductCnt": str(event.quantity),
        "MessageAttributeRequester": settings.FACTORY_REQUESTER or "nudged",
    }
    return row
