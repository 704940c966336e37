"""Domain events: what each one says. The outbox relay (services/outbox.py) sends them."""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from inventory.models import ReorderDecision
from nudged.core.models import OutboxEvent

if TYPE_CHECKING:
    # Types only: inventory.services writes its events through the outbox, which reads these.
    from inventory.services import RefusalCount, StockState

logger = logging.getLogger(__name__)

STOCK_DEPLETED = "stock.depleted"
STOCK_REPLENISHED = "stock.replenished"
STOCK_LOW = "stock.low"
ORDER_COMPLETED = "order.completed"
ORDER_BACKORDERED = "order.backordered"
ORDER_CANCELLED = "order.cancelled"
ORDERS_REFUSED = "orders.refused"
SALES_BATCH = "sales.batch"
SALES_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-4c1e-9a63-0d5e8f4b2c71")
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


def depleted(*, stock: "StockState") -> Event:
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


def refused(*, count: "RefusalCount") -> Event:
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


def backordered(
    *, order_id: int, sku: str, factory_code: str, quantity: int, ready_by: datetime
) -> Event:
    """A pre-order was accepted: production serves it by `ready_by`. Its sale goes out as
    order.completed when its batch serves it."""
    return Event(
        topic=OutboxEvent.Topic.SALES,
        event_type=ORDER_BACKORDERED,
        sku=sku,
        factory_id=factory_code,
        quantity=quantity,
        body={"order_id": order_id, "ready_by": ready_by.isoformat()},
    )


def cancelled(*, order_id: int, sku: str, factory_code: str, quantity: int, reason: str) -> Event:
    """A pre-order production could not serve in time was cancelled: no sale."""
    return Event(
        topic=OutboxEvent.Topic.SALES,
        event_type=ORDER_CANCELLED,
        sku=sku,
        factory_id=factory_code,
        quantity=quantity,
        body={"order_id": order_id, "reason": reason},
    )


def body(event: Event, event_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """The event as its SNS message carries it."""
    return {
        "event_id": str(event_id),
        "type": event.event_type,
        "occurred_at": now.isoformat(),
        "sku": event.sku,
        "factory_id": event.factory_id,
        "quantity": event.quantity,
        **event.body,
    }


def attributes(event: Event) -> dict[str, str]:
    """The SNS message attributes: the original system's, and the type subscriptions filter on."""
    return _attributes(event.event_type, event.sku, event.factory_id, event.quantity)


def _attributes(event_type: str, sku: str, factory_id: str, quantity: int) -> dict[str, str]:
    # SNS rejects a message attribute with an empty value, so every value is a non-empty string.
    return {
        EVENT_TYPE_ATTRIBUTE: event_type,
        "MessageAttributeProductId": sku,
        "MessageAttributeFactoryId": factory_id,
        "MessageAttributeProductCnt": str(quantity),
        "MessageAttributeRequester": settings.FACTORY_REQUESTER or "nudged",
    }


# --- sales ----------------------------------------------------------------------------------
# A completed order is its own record of the sale: no outbox row is written for it. The relay
# reads the orders not yet published and sends their order.completed events many to an SNS
# message (a sales batch), one product per message.


@dataclass(frozen=True)
class Sale:
    order_id: int
    sku: str
    factory_id: str
    quantity: int
    status: str
    stock: int
    created_at: datetime


class SalesLedger(Protocol):
    """The record of sales the relay publishes from: the shop's orders, registered by the shop
    when it starts (inventory and factory_bridge do not import it)."""

    def unpublished(self, *, limit: int) -> list[Sale]:
        """The oldest sales not yet published, at most `limit`."""
        ...

    def mark_published(self, *, order_ids: list[int]) -> None: ...

    def backlog(self) -> tuple[int, datetime | None]:
        """How many sales wait to be published, and when the oldest happened."""
        ...


def sale_event_id(order_id: int) -> uuid.UUID:
    """An order's event id: the same every time the order is published, for deduplication."""
    return uuid.uuid5(SALES_NAMESPACE, str(order_id))


def sale_event(sale: Sale) -> dict[str, Any]:
    """One order.completed event, as it appears in a sales batch."""
    return {
        "event_id": str(sale_event_id(sale.order_id)),
        "type": ORDER_COMPLETED,
        "occurred_at": sale.created_at.isoformat(),
        "sku": sale.sku,
        "factory_id": sale.factory_id,
        "quantity": sale.quantity,
        "order_id": sale.order_id,
        "status": sale.status,
        "stock": sale.stock,
    }


def sales_batch(events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and attributes of one SNS message carrying sales-topic events of a product."""
    first = events[0]
    body = {
        "type": SALES_BATCH,
        "sku": first["sku"],
        "factory_id": first["factory_id"],
        "count": len(events),
        "events": events,
    }
    units = sum(event["quantity"] for event in events)
    return body, _attributes(SALES_BATCH, first["sku"], first["factory_id"], units)


_ledger: SalesLedger | None = None


def register_sales_ledger(ledger: SalesLedger) -> None:
    """Name the record of sales (the shop, once, when it starts)."""
    global _ledger
    _ledger = ledger


def sales_ledger() -> SalesLedger:
    if _ledger is None:
        raise ImproperlyConfigured("no sales ledger registered: is the shop installed?")
    return _ledger
