"""The yardstick of bench/orders.py: a minimal view placing an order in two statements through a
raw cursor, its row born published (no event); unknown SKUs are refused like sold-out ones."""

import json
import secrets

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

TAKE_SQL = "UPDATE inventory_product SET stock = stock - %s WHERE sku = %s AND stock >= %s"
ORDER_SQL = (
    "INSERT INTO shop_order (product_id, quantity, status, channel, unit_price, remaining_stock, "
    "customer, address, reference, created_at, published_at) SELECT id, %s, 'completed', 'api', "
    "price, stock, '', '', %s, %s, %s FROM inventory_product WHERE sku = %s "
    "RETURNING remaining_stock"
)


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    try:
        data = json.loads(request.body)
        sku, quantity = data["sku"], data["quantity"]
    except (ValueError, TypeError, KeyError):
        sku = quantity = None
    if not isinstance(sku, str) or type(quantity) is not int or quantity < 1:
        return JsonResponse({"code": "invalid", "detail": "Send {sku, quantity}."}, status=400)
    reference, now = secrets.token_hex(16), connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(TAKE_SQL, [quantity, sku, quantity])
        if cursor.rowcount != 1:
            return JsonResponse({"code": "out_of_stock", "sku": sku}, status=409)
        cursor.execute(ORDER_SQL, [quantity, reference, now, now, sku])
        [remaining] = cursor.fetchone()
    body = {"sku": sku, "quantity": quantity, "status": "completed", "remaining_stock": remaining}
    return JsonResponse(body | {"reference": reference}, status=201)
