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
from inventory.models import ReorderDecision
from inventory.services import RefusalCount, StockState

logger = logging.getLogger(__name__)

STOCK_DEPLETED = "stock.depleted"
STOCK_REPLENISHED = "stock.replenished"
STOCK_LOW = "stock.low"
ORDER_COMPLETED = "order.completed"
ORDERS_REFUSED = "orders.refused"
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


def low(*, decision: ReorderDecision, factory_code: str, sku: str) -> Event:
    """More was decided for a product; the restock consumer orders exactly this."""
    return Event(
        topic=OutboxEvent.Topic.STOCK,
        event_type=STOCK_LOW,
        sku=sku,
        factory_id=factory_code,
        quantity=decision.quantity,
        body={
            "decision_id": decision.pk,
            "mode": decision.mode,
            "reason": decision.reason,
            "stock": decision.on_hand,
            "on_order": decision.on_order,
            "demand_rate": round(decision.demand_rate, 4),
            "lead_time": round(decision.lead_time, 3),
            "reorder_point": decision.reorder_point,
        },
    )


def order_completed(*, order: Any, stock: StockState) -> Event:
    """An order was completed; `stock` is the product's state right after it."""
    return Event(
        topic=OutboxEvent.Topic.SALES,
        event_type=ORDER_COMPLETED,
        sku=stock.sku,
        factory_id=stock.factory_code,
        quantity=order.quantity,
        body={"order_id": order.pk, "status": order.status, "stock": stock.remaining},
    )


def refused(*, count: RefusalCount) -> Event:
    """Orders refused (out of stock) and limited (purchase limit) over one interval."""
    return Event(
        topic=OutboxEvent.Topic.SALES,
        event_type=ORDERS_REFUSED,
        sku=count.sku,
        factory_id=count.factory_code,
        quantity=count.units_refused,
        body={
            "refused_orders": count.orders_refused,
            "refused_units": count.units_refused,
            "limited_orders": count.orders_limited,
            "since": count.since.isoformat(),
            "until": count.until.isoformat(),
        },
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
