"""Domain events: how they are built and written to the outbox."""

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
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


# Every order writes its events with this one statement (a row per event): the ORM's
# bulk_create costs several times the insert itself on that path.
INSERT_SQL = (
    "INSERT INTO `factory_bridge_outboxevent` (`id`, `topic`, `event_type`, `subject`, "
    "`body`, `attributes`, `sku`, `created_at`, `published_at`, `next_attempt_at`, "
    "`attempts`, `last_error`) VALUES "
)
ROW_SQL = "(%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, 0, '')"


def record(events: list[Event]) -> list[uuid.UUID]:
    """Write events to the outbox in the caller's transaction; relay them after commit.

    Returns the new events' ids.
    """
    if not settings.EVENTS_ENABLED or not events:
        return []
    now = timezone.now()
    db_now = connection.ops.adapt_datetimefield_value(now)
    pk = OutboxEvent._meta.pk
    ids, params = [], []
    for event in events:
        event_id = uuid.uuid4()
        ids.append(event_id)
        params += [
            pk.get_db_prep_value(event_id, connection),
            event.topic,
            event.event_type,
            event.subject,
            json.dumps(_body(event, event_id, now)),
            json.dumps(_attributes(event)),
            event.sku,
            db_now,
            db_now,
        ]
    with connection.cursor() as cursor:
        cursor.execute(INSERT_SQL + ", ".join([ROW_SQL] * len(events)), params)
    from factory_bridge.services.outbox import trigger_relay

    transaction.on_commit(trigger_relay)
    return ids


def _body(event: Event, event_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "event_id": str(event_id),
        "type": event.event_type,
        "occurred_at": now.isoformat(),
        "sku": event.sku,
        "factory_id": event.factory_id,
        "quantity": event.quantity,
        **event.body,
    }


def _attributes(event: Event) -> dict[str, str]:
    # SNS rejects a message attribute with an empty value, so every value is a non-empty string.
    return {
        EVENT_TYPE_ATTRIBUTE: event.event_type,
        "MessageAttributeProductId": event.sku,
        "MessageAttributeFactoryId": event.factory_id,
        "MessageAttributeProductCnt": str(event.quantity),
        "MessageAttributeRequester": settings.FACTORY_REQUESTER or "nudged",
    }
