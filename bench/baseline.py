"""The yardstick of bench/orders.py: a minimal Django view that places an order.

The conditional UPDATE that guards stock and one INSERT of the order row, in one
transaction, through a raw cursor: no DRF, no serializer, no model instance, no event. The
order row is complete (every NOT NULL column of shop_order, the price and the remaining stock
read from the product row the UPDATE locked) and is born published (`published_at` = now):
the baseline writes no event, so the relay must not take its rows for unpublished sales.
Unknown SKUs are refused like sold-out ones: telling them apart would cost a statement.
"""

import json
import secrets

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

TAKE_SQL = "UPDATE inventory_product SET stock = stock - %s WHERE sku = %s AND stock >= %s"
ORDER_SQL = (
    "INSERT INTO shop_order (product_id, quantity, status, channel, unit_price, "
    "remaining_stock, customer, address, reference, created_at, published_at) "
    "SELECT id, %s, 'completed', 'api', price, stock, '', '', %s, %s, %s "
    "FROM inventory_product WHERE sku = %s RETURNING remaining_stock"
)


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    """Take stock and write the order: 201, 409 (not enough stock) or 400 (bad body)."""
    try:
        data = json.loads(request.body)
        sku, quantity = data["sku"], data["quantity"]
    except (ValueError, TypeError, KeyError):
        sku = quantity = None
    if not isinstance(sku, str) or type(quantity) is not int or quantity < 1:
        return JsonResponse({"code": "invalid", "detail": "Send {sku, quantity}."}, status=400)
    reference = secrets.token_hex(16)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(TAKE_SQL, [quantity, sku, quantity])
        if cursor.rowcount != 1:
            return JsonResponse({"code": "out_of_stock", "sku": sku}, status=409)
        cursor.execute(ORDER_SQL, [quantity, reference, now, now, sku])
        [remaining] = cursor.fetchone()
    # The Sales API's answer, field for field (the order's id stays inside, as there).
    body = {
        "sku": sku,
        "quantity": quantity,
        "status": "completed",
        "remaining_stock": remaining,
        "reference": reference,
    }
    return JsonResponse(body, status=201)
