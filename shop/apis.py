"""The Sales API: thin views over the shop services and inventory selectors."""

from functools import wraps

from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.alerts import subscribe_alert
from inventory.selectors import product_get, product_list
from nudged.api import JSON_ACCEPTED, error_response, json_response
from nudged.exceptions import DomainError
from nudged.parsers import MAX_BODY_BYTES, MAX_DEPTH, BodyError, parse_json
from shop.limits import AlertRateThrottle, OrderRateThrottle, address_key
from shop.models import Order
from shop.selectors import order_get
from shop.serializers import (
    AlertInputSerializer,
    AlertOutputSerializer,
    ErrorSerializer,
    InStockSerializer,
    InvalidInputSerializer,
    OrderInputSerializer,
    OrderOutputSerializer,
    OutOfStockSerializer,
    ProductSerializer,
    PurchaseLimitSerializer,
    ReceiptSerializer,
    UnknownSkuSerializer,
)
from shop.services import place_order

# What any operation can answer besides its own outcomes.
EVERY_OPERATION = {
    405: OpenApiResponse(
        ErrorSerializer, description="`method_not_allowed`: the path takes no other method."
    ),
    406: OpenApiResponse(
        ErrorSerializer,
        description="`not_acceptable`: the Accept header rules out application/json.",
    ),
    503: OpenApiResponse(
        ErrorSerializer,
        description="`unavailable`: the database is unreachable; retry after the seconds "
        "in the Retry-After header.",
    ),
}
PRODUCT_LIST_KEY = "api-product-list"
UNKNOWN_SKU = OpenApiResponse(UnknownSkuSerializer, description="`unknown_sku`: no such product.")


class ProductListApi(APIView):
    @extend_schema(responses={200: ProductSerializer(many=True), **EVERY_OPERATION})
    def get(self, request: Request) -> Response:
        products = caches["local"].get_or_set(
            PRODUCT_LIST_KEY,
            lambda: ProductSerializer(product_list(), many=True).data,
            settings.PRODUCT_LIST_MAX_AGE,
        )
        return Response(products)


class ProductDetailApi(APIView):
    @extend_schema(responses={200: ProductSerializer, 404: UNKNOWN_SKU, **EVERY_OPERATION})
    def get(self, request: Request, sku: str) -> Response:
        return Response(ProductSerializer(product_get(sku=sku)).data)


class OrderCreateApi(APIView):
    throttle_classes = [OrderRateThrottle]

    @extend_schema(
        request=OrderInputSerializer,
        responses={
            201: OpenApiResponse(
                OrderOutputSerializer,
                description="Ordered: stock taken (`completed`), or, with `backorder`, units "
                "promised from production (`backordered`, with `ready_by`).",
            ),
            400: OpenApiResponse(
                InvalidInputSerializer,
                description="`invalid`: the body breaks this schema, is not JSON, is not "
                f"`application/json`, or nests deeper than {MAX_DEPTH} levels.",
            ),
            404: UNKNOWN_SKU,
            409: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="OrderRefused",
                    serializers=[OutOfStockSerializer, PurchaseLimitSerializer],
                    resource_type_field_name=None,
                ),
                description="`out_of_stock`: fewer units on hand than asked (counted as demand), "
                "and with `backorder` production cannot serve them either; "
                "`purchase_limit`: this customer (`scope`: `customer`), or everyone at this "
                "client address on every channel together (`scope`: `address`), has bought as "
                "many as one window allows. Stock untouched either way.",
            ),
            413: OpenApiResponse(
                ErrorSerializer,
                description=f"`too_large`: the body is larger than {MAX_BODY_BYTES} bytes.",
            ),
            429: OpenApiResponse(
                ErrorSerializer,
                description="`throttled`: more order requests than ORDER_RATE_LIMIT from this "
                "client address (every order channel counts); retry after the seconds in the "
                "Retry-After header.",
            ),
            **EVERY_OPERATION,
        },
    )
    def post(self, request: Request) -> Response:
        return Response(_order(request.data, request), status=status.HTTP_201_CREATED)


def _order(data: object, request: HttpRequest) -> dict:
    # An API client is its address: its customer limit and its address ceiling both count.
    address = address_key(request)
    result = place_order(
        **OrderInputSerializer.clean(data),
        channel=Order.Channel.API,
        customer=address,
        address=address,
    )
    order = result.order
    # The body is built from known ints and strings: OrderOutputSerializer documents it. The
    # counting id stays inside: it would tell anyone how many orders the shop takes.
    body = {
        "sku": result.sku,
        "quantity": order.quantity,
        "status": order.status,
        "remaining_stock": result.remaining_stock,
        "reference": order.reference,
    }
    if order.promise is not None:
        body["ready_by"] = order.promise.ready_by.isoformat().replace("+00:00", "Z")
    return body


_order_create_api = OrderCreateApi.as_view()


# Dressed as OrderCreateApi's view (its class for the schema, its csrf_exempt).
@wraps(_order_create_api)
def order_create(request: HttpRequest) -> HttpResponse:
    """POST /api/orders/: OrderCreateApi, with the common request answered without DRF.

    A JSON order from a client that takes JSON, with no rate limit to count, is most of what
    a rush sends; DRF's request and response handling cost it a tenth of its CPU
    (docs/performance.md). Every other request, and any body the service's fast check does
    not take as it is, goes to OrderCreateApi, which answers it as before.
    """
    length = request.META.get("CONTENT_LENGTH", "")
    if not (
        request.method == "POST"
        and request.content_type == "application/json"
        and request.META.get("HTTP_ACCEPT", "") in JSON_ACCEPTED
        and not request.GET
        and OrderRateThrottle.off()
        and length.isdigit()
        and 0 < int(length) <= MAX_BODY_BYTES
    ):
        return _order_create_api(request)
    try:
        data = parse_json(request.body, encoding=request.encoding or "utf-8")
    except BodyError:
        return _order_create_api(request)  # it answers 400 with the parser's reason
    try:
        body = _order(data, request)
    except (DomainError, ValidationError, DatabaseError) as exc:
        return error_response(exc)
    return json_response(body, status=status.HTTP_201_CREATED, allow="POST, OPTIONS")


class OrderDetailApi(APIView):
    @extend_schema(
        responses={
            200: ReceiptSerializer,
            404: OpenApiResponse(
                ErrorSerializer, description="`unknown_order`: no order has this reference."
            ),
            **EVERY_OPERATION,
        }
    )
    def get(self, request: Request, reference: str) -> Response:
        return Response(ReceiptSerializer(order_get(reference=reference)).data)


class AlertCreateApi(APIView):
    throttle_classes = [AlertRateThrottle]

    @extend_schema(
        request=AlertInputSerializer,
        responses={
            201: OpenApiResponse(
                AlertOutputSerializer,
                description="Taken: the address gets one email with a link to confirm the "
                "alert, and, once confirmed, one email when the product is back in stock. "
                "Variants of one mailbox (case, `+tag`) are one alert: a mailbox that already "
                "asked for this donut gets the same answer and no second email.",
            ),
            400: OpenApiResponse(
                InvalidInputSerializer,
                description="`invalid`: the body breaks this schema (not an email address), "
                "is not JSON or is not `application/json`.",
            ),
            404: UNKNOWN_SKU,
            409: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="AlertRefused",
                    serializers=[InStockSerializer, ErrorSerializer],
                    resource_type_field_name=None,
                ),
                description="`in_stock`: the donut is in stock (alerts are for sold-out "
                "donuts); `suppressed`: the mailbox unsubscribed from our email or its server "
                "refused it, so it gets none.",
            ),
            429: OpenApiResponse(
                ErrorSerializer,
                description="`throttled`: more alert requests than ALERT_RATE_LIMIT from this "
                "client address, or more new alerts than ALERT_MAILBOX_LIMIT for this mailbox; "
                "retry after the seconds in the Retry-After header.",
            ),
            **EVERY_OPERATION,
        },
    )
    def post(self, request: Request, sku: str) -> Response:
        data = AlertInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        email = data.validated_data["email"]
        subscribe_alert(sku=sku, email=email)
        # The address as asked, never the stored one: the answer tells nobody which variant
        # of a mailbox asked before, or whether it confirmed.
        body = {"sku": sku, "email": email.strip(), "status": "pending"}
        return Response(body, status=status.HTTP_201_CREATED)
