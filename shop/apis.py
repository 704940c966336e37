"""The Sales API: thin views over the shop services and inventory selectors."""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    Direction,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    MethodNotAllowed,
    NotAcceptable,
    ParseError,
    UnsupportedMediaType,
)
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from inventory.selectors import product_get, product_list
from nudged.core.api import JSON_ACCEPTED, error_response, json_response
from nudged.core.exceptions import DomainError
from nudged.core.parsers import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    BodyError,
    BodyTooLarge,
    RequestTooLarge,
    parse_json,
    read_body,
)
from shop.limits import address_key
from shop.models import Basket, Order
from shop.orders import order_input_schema, take_alert, take_order
from shop.selectors import receipt_get
from shop.serializers import (
    AlertInputSerializer,
    AlertOutputSerializer,
    BasketOutputSerializer,
    BasketReceiptSerializer,
    BasketShortSerializer,
    ErrorSerializer,
    InStockSerializer,
    InvalidInputSerializer,
    OrderOutputSerializer,
    OutOfStockSerializer,
    ProductSerializer,
    PurchaseLimitSerializer,
    ReceiptSerializer,
    UnknownSkuSerializer,
)
from shop.services import BasketResult, OrderResult

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


class OrderInputSchema(Serializer):
    """The order body in the OpenAPI schema: shop.orders.order_input_schema(), the bounds
    clean_order applies (OrderInputExtension)."""


class OrderInputExtension(OpenApiSerializerExtension):
    target_class = OrderInputSchema

    def get_name(self, auto_schema: AutoSchema, direction: Direction) -> str:
        return "OrderInput"

    def map_serializer(self, auto_schema: AutoSchema, direction: Direction) -> dict[str, Any]:
        return order_input_schema()


class OrderBodySchema(AutoSchema):
    """An order body is required: one of two shapes (one donut, a basket), which share no
    required field from which drf-spectacular would tell."""

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        if body:
            body["required"] = True
        return body


class OrderCreateSchema(APIView):
    """The OpenAPI operation of POST /api/orders/, for drf-spectacular: `order_create`
    answers the requests, without DRF (docs/performance.md)."""

    schema = OrderBodySchema()

    @extend_schema(
        operation_id="orders_create",
        request=OrderInputSchema,
        responses={
            201: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="OrderPlaced",
                    serializers=[OrderOutputSerializer, BasketOutputSerializer],
                    resource_type_field_name=None,
                ),
                description="Ordered: stock taken (`completed`), or, with `backorder`, units "
                "promised from production (`backordered`, with `ready_by`). A basket answers "
                "with its lines and total.",
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
                    serializers=[
                        OutOfStockSerializer,
                        BasketShortSerializer,
                        PurchaseLimitSerializer,
                    ],
                    resource_type_field_name=None,
                ),
                description="`out_of_stock`: fewer units on hand than asked (counted as demand), "
                "and with `backorder` production cannot serve them either (a basket: `lines` "
                "names each line short, and none was ordered); "
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
        raise NotImplementedError("order_create answers POST /api/orders/")


ALLOW = "POST, OPTIONS"
OPTIONS_BODY = {"renders": ["application/json"], "parses": ["application/json"]}


@csrf_exempt
def order_create(request: HttpRequest) -> HttpResponse:
    """POST /api/orders/: the Sales API's channel of the order path (shop.orders)."""
    if request.method == "OPTIONS":
        return json_response(OPTIONS_BODY, status=status.HTTP_200_OK, allow=ALLOW)
    try:
        data = _order_body(request)
        result = take_order(data=data, channel=Order.Channel.API, address=address_key(request))
    except (DomainError, APIException, DatabaseError) as exc:
        return error_response(exc, allow=ALLOW)
    # The body is built from known ints and strings: OrderOutputSerializer and
    # BasketOutputSerializer document it. The counting id stays inside: it would tell anyone
    # how many orders the shop takes.
    if isinstance(result, BasketResult):
        body = {
            "reference": result.reference,
            "status": result.status,
            "total": result.total,
            "lines": [_order_body_of(line, unit_price=True) for line in result.lines],
        }
        if result.ready_by is not None:
            body["ready_by"] = _utc(result.ready_by)
    else:
        body = _order_body_of(result)
    return json_response(body, status=status.HTTP_201_CREATED, allow=ALLOW)


def _order_body_of(result: OrderResult, *, unit_price: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": result.sku,
        "quantity": result.quantity,
        "status": result.status,
        "remaining_stock": result.remaining_stock,
    }
    if unit_price:
        body["unit_price"] = result.unit_price
    else:
        body["reference"] = result.reference
    if result.ready_by is not None:
        body["ready_by"] = _utc(result.ready_by)
    return body


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# drf-spectacular documents a view by its class.
order_create.cls = OrderCreateSchema  # type: ignore[attr-defined]  # drf-spectacular reads .cls
order_create.initkwargs = {}  # type: ignore[attr-defined]  # and .initkwargs


def _order_body(request: HttpRequest) -> object:
    """The JSON body of an order request, or the APIException that answers it."""
    if request.method != "POST":
        raise MethodNotAllowed(request.method or "")
    accept = request.META.get("HTTP_ACCEPT", "")
    if accept not in JSON_ACCEPTED and not request.accepts("application/json"):
        raise NotAcceptable()
    if request.content_type != "application/json":
        raise UnsupportedMediaType(request.content_type)  # type: ignore[arg-type]  # WSGIRequest sets it
    try:
        return parse_json(read_body(request), encoding=request.encoding or "utf-8")
    except BodyTooLarge as exc:
        raise RequestTooLarge() from exc
    except BodyError as exc:
        raise ParseError(str(exc)) from exc


class OrderDetailApi(APIView):
    @extend_schema(
        responses={
            200: PolymorphicProxySerializer(
                component_name="AnyReceipt",
                serializers=[ReceiptSerializer, BasketReceiptSerializer],
                resource_type_field_name=None,
            ),
            404: OpenApiResponse(
                ErrorSerializer,
                description="`unknown_order`: no order or basket has this reference.",
            ),
            **EVERY_OPERATION,
        }
    )
    def get(self, request: Request, reference: str) -> Response:
        placed = receipt_get(reference=reference)
        if isinstance(placed, Basket):
            return Response(BasketReceiptSerializer(placed).data)
        return Response(ReceiptSerializer(placed).data)


class AlertCreateApi(APIView):
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
        take_alert(sku=sku, email=email, address=address_key(request))
        # The address as asked, never the stored one: the answer tells nobody which variant
        # of a mailbox asked before, or whether it confirmed.
        body = {"sku": sku, "email": email.strip(), "status": "pending"}
        return Response(body, status=status.HTTP_201_CREATED)
