"""The completed orders as the record of sales that the outbox relay publishes."""

from datetime import datetime

from django.utils import timezone

from factory_bridge.events import Sale
from shop.models import Order


class OrderLedger:
    """Sales are the orders without `published_at`, oldest first (SALES_LEDGER)."""

    def unpublished(self, *, limit: int) -> list[Sale]:
        rows = (
            Order.objects.filter(published_at__isnull=True)
            .order_by("pk")
            .values_list(
                "pk",
                "product__sku",
                "product__factory__code",
                "quantity",
                "status",
                "remaining_stock",
                "created_at",
            )[:limit]
        )
        return [Sale(*row) for row in rows]

    def mark_published(self, *, order_ids: list[int]) -> None:
        Order.objects.filter(pk__in=order_ids).update(published_at=timezone.now())

    def backlog(self) -> tuple[int, datetime | None]:
        waiting = Order.objects.filter(published_at__isnull=True)
        oldest = waiting.order_by("pk").values_list("created_at", flat=True).first()
        return (waiting.count() if oldest else 0), oldest
