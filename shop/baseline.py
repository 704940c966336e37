"""A hand-written twin of POST /api/orders/: the yardstick of the order benchmark.

It sends the statements `shop.services.place_order` sends, in the same order and the same
transaction, through a raw cursor: no DRF, no serializers, no model instances. The stock
statements are inventory.services' and the events are written by factory_bridge.events.record,
as place_order does; the order row is inserted by hand. The gap between the two is what the
Sales API's own code costs (bench/orders.py, which also checks that both send the same
statements). Keep it in step with place_order. Routed at /bench/baseline/orders/ only when
BENCHMARK_BASELINE is true, and never with the production settings.
"""

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from factory_bridge.events import (
    DEPLETED_SUBJECT,
    ORDER_COMPLETED,
    ORDER_REJECTED,
    STOCK_DEPLETED,
    Event,
    record,
)
from factory_bridge.models import OutboxEvent
from inventory.exceptions import UnknownSku
from inventory.services import STOCK_SQL, TAKE_SQL
from nudged.parsers import BodyError, parse_json, read_body
from shop.exceptions import OutOfStock
from shop.models import Order

# place_order's stock statements are inventory.services'; the rest is the SQL the ORM
# generates for it on MySQL/MariaDB, parameters as %s.
ORDER_SQL = (
    "INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, `channel`, "
    "`remaining_stock`, `created_at`) VALUES (%s, %s, %s, %s, %s, %s) "
    "RETURNING `shop_order`.`id`"
)
DEPLETE_SQL = (
    "UPDATE `inventory_product` SET `depleted_at` = %s "
    "WHERE (`inventory_product`.`depleted_at` IS NULL AND `inventory_product`.`id` = %s)"
)


def _invalid(field: str) -> JsonResponse:
    return JsonResponse({"code": "invalid", "detail": f"Invalid input: {field}."}, status=400)


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    """Place an order with raw SQL; answer like POST /api/orders/ (201, 409, 404 or 400)."""
    try:
        data = parse_json(read_body(request))
    except BodyError:
        return _invalid("body")
    if not isinstance(data, dict):
        return _invalid("non_field_errors")
    sku, quantity = data.get("sku"), data.get("quantity")
    if not isinstance(sku, str) or not 0 < len(sku) <= 32:
        return _invalid("sku")
    if type(quantity) is not int or not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        return _invalid("quantity")

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(TAKE_SQL, [quantity, sku, quantity])
        taken = cursor.rowcount
        cursor.execute(STOCK_SQL, [sku])
        product = cursor.fetchone()
        if product is None:
            error = UnknownSku(sku)
            return JsonResponse(
                {"code": error.code, "detail": error.detail, "sku": sku}, status=error.status
            )
        product_id, sku, remaining, depleted, restock, factory_code = product
        opened = False
        if remaining == 0 and not depleted:
            # Before the order insert, as in place_order (its foreign key lock would deadlock).
            opened_at = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(DEPLETE_SQL, [opened_at, product_id])
            opened = cursor.rowcount == 1
        status = Order.Status.COMPLETED if taken else Order.Status.REJECTED
        created_at = connection.ops.adapt_datetimefield_value(timezone.now())
        cursor.execute(
            ORDER_SQL,
            [product_id, quantity, status.value, Order.Channel.API.value, remaining, created_at],
        )
        order_id = cursor.fetchone()[0]
        happened = [
            Event(
                topic=OutboxEvent.Topic.SALES,
                event_type=ORDER_COMPLETED if taken else ORDER_REJECTED,
                sku=sku,
                factory_id=factory_code,
                quantity=quantity,
                body={"order_id": order_id, "status": status.value, "stock": remaining},
            )
        ]
        if opened:
            happened.append(
                Event(
                    topic=OutboxEvent.Topic.STOCK,
                    event_type=STOCK_DEPLETED,
                    sku=sku,
                    factory_id=factory_code,
                    quantity=restock,
                    body={"stock": remaining, "restock_quantity": restock},
                    subject=DEPLETED_SUBJECT,
                )
            )
        record(happened)

    if not taken:
        detail = f"Only {remaining} of {sku} in stock; {quantity} requested."
        return JsonResponse(
            {
                "code": OutOfStock.code,
                "detail": detail,
                "available": remaining,
                "order_id": order_id,
            },
            status=OutOfStock.status,
        )
    body = {
        "id": order_id,
        "sku": sku,
        "quantity": quantity,
        "status": status.value,
        "remaining_stock": remaining,
    }
    return JsonResponse(body, status=201)


def _mounted() -> bool:
    return settings.BENCHMARK_BASELINE and not settings.SETTINGS_MODULE.endswith(".production")


urlpatterns = [path("orders/", create_order, name="baseline-order-create")] if _mounted() else []
