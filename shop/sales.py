"""The completed orders as the record of sales that the outbox relay publishes."""

from datetime import datetime

from django.db import connection
from django.utils import timezone

from inventory.events import Sale
from shop.models import Order

# Written out: the relay runs them every sales interval under load, and the ORM spends more
# than the database building them.
UNPUBLISHED_SQL = (
    "SELECT `o`.`id`, `p`.`sku`, `f`.`code`, `o`.`quantity`, `o`.`status`, "
    "`o`.`remaining_stock`, `o`.`created_at` FROM `shop_order` `o` "
    "INNER JOIN `inventory_product` `p` ON `p`.`id` = `o`.`product_id` "
    "INNER JOIN `inventory_factory` `f` ON `f`.`id` = `p`.`factory_id` "
    "WHERE `o`.`published_at` IS NULL AND `o`.`status` <> 'backordered' "
    "ORDER BY `o`.`id` LIMIT %s"
)
MARK_SQL = "UPDATE `shop_order` SET `published_at` = %s WHERE `id` IN ({})"


class OrderLedger:
    """Sales are the orders without `published_at`, oldest first (inventory.events.SalesLedger).

    A pre-order is a sale once its batch served it: it waits until then, and one cancelled
    is marked published when it is (its order.cancelled event is an outbox row).
    """

    def unpublished(self, *, limit: int) -> list[Sale]:
        with connection.cursor() as cursor:
            cursor.execute(UNPUBLISHED_SQL, [limit])
            rows = cursor.fetchall()
        # Naive, in the connection's time zone (UTC), as the ORM would read them.
        zone = connection.timezone
        return [Sale(*row[:6], row[6].replace(tzinfo=zone)) for row in rows]  # type: ignore[call-arg]  # row[:6] is six fields

    def mark_published(self, *, order_ids: list[int]) -> None:
        if not order_ids:
            return
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(MARK_SQL.format(", ".join(["%s"] * len(order_ids))), [now, *order_ids])

    def backlog(self) -> tuple[int, datetime | None]:
        waiting = Order.objects.filter(published_at__isnull=True).exclude(
            status=Order.Status.BACKORDERED
        )
        oldest = waiting.order_by("pk").values_list("created_at", flat=True).first()
        return (waiting.count() if oldest else 0), oldest
