"""What becomes of a pre-order's promise (inventory.signals) moves its order along, in the
transaction that settled the promise."""

from typing import Any

from django.utils import timezone

from factory_bridge import events
from factory_bridge.services import outbox
from inventory import signals
from shop.models import Order


def on_promises_kept(*, promises: list, **kwargs: Any) -> None:
    """Served: the order is completed, and its sale goes out with the others."""
    Order.objects.filter(
        promise_id__in=[p.pk for p in promises], status=Order.Status.BACKORDERED
    ).update(status=Order.Status.COMPLETED, fulfilled_at=timezone.now())
    outbox.sold()


def on_promises_cancelled(*, promises: list, **kwargs: Any) -> None:
    """Cancelled: no sale to publish; order.cancelled tells the ops feed instead."""
    reasons = {p.pk: p.reason for p in promises}
    waiting = Order.objects.filter(promise_id__in=reasons, status=Order.Status.BACKORDERED)
    orders = list(waiting.select_related("product__factory"))
    if not orders:
        return
    waiting.update(status=Order.Status.CANCELLED, published_at=timezone.now())
    outbox.record(
        [
            events.cancelled(
                order_id=order.pk,
                sku=order.product.sku,
                factory_code=order.product.factory.code,
                quantity=order.quantity,
                reason=reasons[order.promise_id],
            )
            for order in orders
        ]
    )


def connect() -> None:
    signals.promises_kept.connect(on_promises_kept, dispatch_uid="shop.promises_kept")
    signals.promises_cancelled.connect(
        on_promises_cancelled, dispatch_uid="shop.promises_cancelled"
    )
