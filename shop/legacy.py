"""The original Sales API, kept byte-compatible for existing clients."""

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inventory.exceptions import UnknownSku
from inventory.selectors import product_get
from nudged.core.parsers import BodyError, BodyTooLarge, parse_json, read_body
from nudged.core.ratelimits import RateLimited
from shop.exceptions import OutOfStock, PurchaseLimitReached
from shop.limits import address_key
from shop.models import Order
from shop.orders import take_order
from shop.services import OrderResult

logger = logging.getLogger(__name__)

NO_PRODUCT = {"message": "상품 없음"}
NOT_JSON = {"message": "잘못된 요청: JSON 본문이 아닙니다"}
TOO_LARGE = {"message": "잘못된 요청: 본문이 너무 큽니다"}
# Characters of a client-supplied value that a log line keeps.
LOGGED_CHARS = 64


def _json(body: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


# Without a CSRF token, as the original API's clients send none: a POST to a route that does
# not exist is a JSON 404 like any other, not Django's CSRF page.
@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    return _json({"error": "Not Found"}, status=404)


@csrf_exempt
def product_donut(request: HttpRequest) -> JsonResponse:
    # The original answered GET (and HEAD) here and any other method as an unknown route.
    if request.method not in ("GET", "HEAD"):
        return not_found(request)
    try:
        product = product_get(sku=settings.LEGACY_SKU)
    except UnknownSku:
        return _json(NO_PRODUCT, status=400)
    return _json(
        {
            "product_id": product.sku,
            "name": product.name,
            "price": product.price,
            "stock": product.stock,
            "factory_id": product.factory.code,
        }
    )


@csrf_exempt
def checkout(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return not_found(request)
    try:
        raw = read_body(request)
        body = parse_json(raw) if raw else None
    except BodyTooLarge:
        return _json(TOO_LARGE, status=400)
    except BodyError:
        return _json(NOT_JSON, status=400)
    if isinstance(body, dict) and body.get("MessageAttributeFactoryId"):
        # Accepted for compatibility; the product's own factory is the one that is ordered.
        hint = str(body["MessageAttributeFactoryId"])[:LOGGED_CHARS]
        logger.info("checkout factory hint=%r", hint)
    # Refusals keep the original contract: 200 and "구매 실패!", with the reason. A client of
    # the original API is its address, as on the Sales API: the same customer.
    try:
        result = take_order(
            data={"sku": settings.LEGACY_SKU, "quantity": 1},
            channel=Order.Channel.LEGACY,
            address=address_key(request),
        )
    except RateLimited as limited:
        return _json(
            {"message": f"구매 실패! 요청이 너무 많습니다. {limited.wait}초 후에 다시 시도하세요."}
        )
    except UnknownSku:
        return _json(NO_PRODUCT, status=400)
    except OutOfStock as refused:
        return _json({"message": f"구매 실패! 남은 재고: {refused.available}"})
    except PurchaseLimitReached as limited:
        per = "한 사람당" if limited.scope == PurchaseLimitReached.CUSTOMER else "한 주소당"
        limit = f"{per} {limited.limit}개까지 구매할 수 있습니다"
        return _json({"message": f"구매 실패! 구매 한도 초과: {limit}."})
    assert isinstance(result, OrderResult)  # one donut: the original API has no baskets
    return _json({"message": f"구매 완료! 남은 재고: {result.remaining_stock}"})
