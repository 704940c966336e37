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

from factory_bridge.events import ORDER_COMPLETED, Event, record
from factory_bridge.models import OutboxEvent
from inventory.exceptions import UnknownSku
from inventory.services import take_stock
from nudged.parsers import BodyError, parse_json, read_body
from shop.exceptions import OutOfStock
from shop.models import Order

# place_order's stock statements (and the depletion and reorder they may set off) are
# inventory.services'; the order row is the SQL the ORM generates for it on MySQL/MariaDB.
ORDER_SQL = (
    "INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, `channel`, "
    "`remaining_stock`, `created_at`) VALUES (%s, %s, %s, %s, %s, %s) "
    "RETURNING `shop_order`.`id`"
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

    with transaction.atomic():
        try:
            outcome = take_stock(sku=sku, quantity=quantity)
        except UnknownSku as error:
            return JsonResponse(
                {"code": error.code, "detail": error.detail, "sku": sku}, status=error.status
            )
        stock = outcome.state
        remaining = stock.remaining
        if outcome.taken:
            status = Order.Status.COMPLETED
            created_at = connection.ops.adapt_datetimefield_value(timezone.now())
            with connection.cursor() as cursor:
                cursor.execute(
                    ORDER_SQL,
                    [
                        stock.product_id,
                        quantity,
                        status.value,
                        Order.Channel.API.value,
                        remaining,
                        created_at,
                    ],
                )
                order_id = cursor.fetchone()[0]
            event = Event(
                topic=OutboxEvent.Topic.SALES,
                event_type=ORDER_COMPLETED,
                sku=stock.sku,
                factory_id=stock.factory_code,
                quantity=quantity,
                body={"order_id": order_id, "status": status.value, "stock": remaining},
            )
            record([event])

    if not outcome.taken:
        detail = f"Only {remaining} of {stock.sku} in stock; {quantity} requested."
        return JsonResponse(
            {"code": OutOfStock.code, "detail": detail, "available": remaining},
            status=OutOfStock.status,
        )
    body = {
        "id": order_id,
        "sku": stock.sku,
        "quantity": quantity,
        "status": status.value,
        "remaining_stock": remaining,
    }
    return JsonResponse(body, status=201)


def _mounted() -> bool:
    return settings.BENCHMARK_BASELINE and not settings.SETTINGS_MODULE.endswith(".production")


urlpatterns = [path("orders/", create_order, name="baseline-order-create")] if _mounted() else []
