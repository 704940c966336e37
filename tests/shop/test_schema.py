"""The OpenAPI schema is the Sales API's contract: each answer the API gives is documented.

Every case below sends one request, and its answer must be a status the schema documents
for that operation, with a body valid against the documented response schema. Every
request answered 400 must be invalid by the documented request schema. And every status the
schema documents is exercised by some case, so neither side can drift alone.
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings
from jsonschema import Draft7Validator
from rest_framework.test import APIClient

from inventory.models import Product, SuppressedAddress
from nudged.core.parsers import MAX_BODY_BYTES, MAX_DEPTH

pytestmark = pytest.mark.usefixtures("no_events")

ORDERS = ("/api/orders/", "post")
PRODUCTS = ("/api/products/", "get")
PRODUCT = ("/api/products/{sku}/", "get")
ORDER = ("/api/orders/{reference}/", "get")
ALERTS = ("/api/products/{sku}/alerts/", "post")
ALERTS_URL = "/api/products/CP-502101/alerts/"
# Its contract belongs to the factory, not to the Sales API.
NOT_SALES_API = "/factory/"

DATABASE_DOWN = OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")


@dataclass(frozen=True)
class Case:
    operation: tuple[str, str]
    status: int
    method: str = ""
    url: str = ""
    body: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Dotted path of a function the view calls, replaced by one that finds the database down.
    down: str = ""
    # Settings the request is sent under (limits are off in the tests unless asked for).
    settings: dict[str, Any] = field(default_factory=dict)
    # Place an order first; "{reference}" in the url is its reference.
    ordered: bool = False
    # The product sold out first (alerts are for sold-out donuts).
    sold_out: bool = False
    # Mailboxes on the suppression list first.
    suppressed: tuple[str, ...] = ()
    # A second donut in the catalog (SECOND), for baskets; with `ordered`, a basket of both.
    basket: bool = False

    def send(self, client: APIClient) -> Any:
        path, method = self.operation
        url = self.url or path
        if self.basket:
            first = Product.objects.get(sku="CP-502101")
            Product.objects.create(
                sku=SECOND, name="Second", price=1000, stock=3, factory_id=first.factory_id
            )
        if self.sold_out:
            Product.objects.filter(sku="CP-502101").update(stock=0)
        for mailbox in self.suppressed:
            SuppressedAddress.objects.create(mailbox=mailbox, reason="unsubscribed")
        if self.ordered:
            # A pre-order when the donut is sold out.
            body = {"sku": "CP-502101", "quantity": 1, "backorder": self.sold_out}
            if self.basket:
                body = {"items": BOX, "backorder": self.sold_out}
            placed = client.post("/api/orders/", body, format="json")
            url = url.format(reference=placed.json()["reference"])
        send: Callable[..., Any] = getattr(client, self.method or method)
        if self.raw is not None:
            return send(url, self.raw, content_type=self.content_type, headers=self.headers)
        if self.body is not None:
            return send(url, self.body, format="json", headers=self.headers)
        return send(url, headers=self.headers)


def order(body: Any, status: int) -> Case:
    return Case(ORDERS, status, body=body)


def order_raw(raw: bytes, status: int, content_type: str = "application/json") -> Case:
    return Case(ORDERS, status, raw=raw, content_type=content_type)


MAX = settings.ORDER_MAX_QUANTITY
SECOND = "CP-502102"
BOX = [{"sku": "CP-502101", "quantity": 1}, {"sku": SECOND, "quantity": 2}]


def basket(items: Any, status: int) -> Case:
    return Case(ORDERS, status, body={"items": items}, basket=True)


CASES = {
    "orders-created": order({"sku": "CP-502101", "quantity": 2}, 201),
    "orders-created-padded-sku": order({"sku": " CP-502101 ", "quantity": 1}, 201),
    "orders-blank-sku-above-stock": order({"sku": "", "quantity": 99}, 400),
    "orders-whitespace-sku": order({"sku": "   ", "quantity": 1}, 400),
    "orders-null-sku": order({"sku": None, "quantity": 1}, 400),
    "orders-sku-too-long": order({"sku": "X" * 33, "quantity": 1}, 400),
    "orders-missing-sku": order({"quantity": 1}, 400),
    "orders-missing-quantity": order({"sku": "CP-502101"}, 400),
    "orders-quantity-0": order({"sku": "CP-502101", "quantity": 0}, 400),
    "orders-quantity-above-max": order({"sku": "CP-502101", "quantity": MAX + 1}, 400),
    "orders-quantity-fraction": order({"sku": "CP-502101", "quantity": 1.5}, 400),
    "orders-quantity-text": order({"sku": "CP-502101", "quantity": "abc"}, 400),
    "orders-quantity-bool": order({"sku": "CP-502101", "quantity": True}, 400),
    "orders-quantity-huge": order({"sku": "CP-502101", "quantity": 10**30}, 400),
    "orders-array": order([{"sku": "CP-502101", "quantity": 1}], 400),
    "orders-string": order("CP-502101", 400),
    "orders-malformed-json": order_raw(b'{"sku": "CP-502101", "quantity": ', 400),
    "orders-not-utf8": order_raw(b"\xff\xfe\x00", 400),
    "orders-nan": order_raw(b'{"sku": "CP-502101", "quantity": NaN}', 400),
    "orders-too-deep": order_raw(b"[" * (MAX_DEPTH + 1), 400),
    "orders-form-body": order_raw(
        b"sku=CP-502101&quantity=1", 400, "application/x-www-form-urlencoded"
    ),
    "orders-text-body": order_raw(b"hello", 400, "text/plain"),
    "orders-too-large": order_raw(b" " * (MAX_BODY_BYTES + 1), 413),
    "orders-backordered": Case(
        ORDERS,
        201,
        body={"sku": "CP-502101", "quantity": 2, "backorder": True, "email": "a@example.com"},
        sold_out=True,
    ),
    "orders-backorder-from-the-shelf": order(
        {"sku": "CP-502101", "quantity": 1, "backorder": True}, 201
    ),
    "orders-backorder-not-bool": order(
        {"sku": "CP-502101", "quantity": 1, "backorder": "maybe"}, 400
    ),
    "orders-unknown-sku": order({"sku": "NOPE-1", "quantity": 1}, 404),
    "orders-out-of-stock": order({"sku": "CP-502101", "quantity": 5}, 409),
    "orders-purchase-limit": Case(
        ORDERS, 409, body={"sku": "CP-502101", "quantity": 2}, settings={"PURCHASE_LIMIT": 1}
    ),
    "orders-address-limit": Case(
        ORDERS,
        409,
        body={"sku": "CP-502101", "quantity": 2},
        settings={"PURCHASE_LIMIT": 5, "PURCHASE_LIMIT_PER_ADDRESS": 1},
    ),
    "orders-throttled": Case(
        ORDERS, 429, body={"sku": "CP-502101", "quantity": 1}, settings={"ORDER_RATE_LIMIT": "0/m"}
    ),
    "orders-basket": basket(BOX, 201),
    "orders-basket-backordered": Case(
        ORDERS, 201, body={"items": BOX, "backorder": True}, basket=True, sold_out=True
    ),
    "orders-basket-short": basket([{"sku": "CP-502101", "quantity": 5}, *BOX[1:]], 409),
    "orders-basket-limited": Case(
        ORDERS, 409, body={"items": BOX}, basket=True, settings={"PURCHASE_LIMIT": 1}
    ),
    "orders-basket-unknown-sku": basket([*BOX, {"sku": "NOPE-1", "quantity": 1}], 404),
    "orders-basket-empty": basket([], 400),
    "orders-basket-not-a-list": basket({"sku": "CP-502101", "quantity": 1}, 400),
    "orders-basket-bad-line": basket([{"sku": " ", "quantity": 1}], 400),
    "orders-basket-line-not-object": basket(["CP-502101"], 400),
    "orders-basket-too-many": basket(
        [{"sku": f"X-{n}", "quantity": 1} for n in range(settings.ORDER_MAX_LINES + 1)], 400
    ),
    "orders-get": Case(ORDERS, 405, method="get"),
    "orders-put": Case(ORDERS, 405, method="put"),
    "orders-patch": Case(ORDERS, 405, method="patch"),
    "orders-delete": Case(ORDERS, 405, method="delete"),
    "orders-accept-html": Case(
        ORDERS, 406, body={"sku": "CP-502101", "quantity": 1}, headers={"Accept": "text/html"}
    ),
    "orders-database-down": Case(
        ORDERS, 503, body={"sku": "CP-502101", "quantity": 1}, down="shop.orders.place_order"
    ),
    "products-listed": Case(PRODUCTS, 200),
    "products-post": Case(PRODUCTS, 405, method="post"),
    "products-delete": Case(PRODUCTS, 405, method="delete"),
    "products-accept-html": Case(PRODUCTS, 406, headers={"Accept": "text/html"}),
    "products-database-down": Case(PRODUCTS, 503, down="shop.apis.product_list"),
    "product-found": Case(PRODUCT, 200, url="/api/products/CP-502101/"),
    "product-unknown-sku": Case(PRODUCT, 404, url="/api/products/NOPE-1/"),
    "product-put": Case(PRODUCT, 405, method="put", url="/api/products/CP-502101/"),
    "product-accept-html": Case(
        PRODUCT, 406, url="/api/products/CP-502101/", headers={"Accept": "text/html"}
    ),
    "alert-created": Case(
        ALERTS, 201, url=ALERTS_URL, body={"email": "a@example.com"}, sold_out=True
    ),
    "alert-in-stock": Case(ALERTS, 409, url=ALERTS_URL, body={"email": "a@example.com"}),
    "alert-suppressed": Case(
        ALERTS,
        409,
        url=ALERTS_URL,
        body={"email": "gone+x@example.com"},
        sold_out=True,
        suppressed=("gone@example.com",),
    ),
    "alert-throttled": Case(
        ALERTS,
        429,
        url=ALERTS_URL,
        body={"email": "a@example.com"},
        settings={"ALERT_RATE_LIMIT": "0/m"},
    ),
    "alert-bad-email": Case(ALERTS, 400, url=ALERTS_URL, body={"email": "not-an-address"}),
    "alert-unknown-sku": Case(
        ALERTS, 404, url="/api/products/NOPE-1/alerts/", body={"email": "a@example.com"}
    ),
    "alert-get": Case(ALERTS, 405, method="get", url=ALERTS_URL),
    "alert-accept-html": Case(
        ALERTS,
        406,
        url=ALERTS_URL,
        body={"email": "a@example.com"},
        headers={"Accept": "text/html"},
    ),
    "alert-database-down": Case(
        ALERTS,
        503,
        url=ALERTS_URL,
        body={"email": "a@example.com"},
        down="shop.orders.subscribe_alert",
    ),
    "product-database-down": Case(
        PRODUCT, 503, url="/api/products/CP-502101/", down="shop.apis.product_get"
    ),
    "order-found": Case(ORDER, 200, url="/api/orders/{reference}/", ordered=True),
    "order-waiting": Case(ORDER, 200, url="/api/orders/{reference}/", ordered=True, sold_out=True),
    "order-basket": Case(ORDER, 200, url="/api/orders/{reference}/", ordered=True, basket=True),
    "order-basket-waiting": Case(
        ORDER, 200, url="/api/orders/{reference}/", ordered=True, basket=True, sold_out=True
    ),
    "order-unknown-reference": Case(ORDER, 404, url="/api/orders/nope/"),
    "order-post": Case(ORDER, 405, method="post", url="/api/orders/nope/"),
    "order-accept-html": Case(ORDER, 406, url="/api/orders/nope/", headers={"Accept": "text/html"}),
    "order-database-down": Case(ORDER, 503, url="/api/orders/nope/", down="shop.apis.receipt_get"),
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The components with every object closed: a field the schema does not name is an error."""
    components = copy.deepcopy(schema["components"])
    for component in components["schemas"].values():
        if component.get("type") == "object" and "properties" in component:
            component.setdefault("additionalProperties", False)
            # OpenAPI 3.0's `nullable` in the JSON Schema the validator reads.
            for prop in component["properties"].values():
                if prop.pop("nullable", False):
                    prop["type"] = [prop["type"], "null"]
    return components


def validator(schema: dict[str, Any], subschema: dict[str, Any]) -> Draft7Validator:
    return Draft7Validator({**subschema, "components": closed(schema)})


def sales_operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, operations in schema["paths"].items()
        if not path.startswith(NOT_SALES_API)
        for method in operations
    }


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_answer_is_documented(schema, product, case):
    path, method = case.operation
    operation = schema["paths"][path][method]

    with override_settings(**case.settings):
        if case.down:
            with mock.patch(case.down, side_effect=DATABASE_DOWN):
                response = case.send(APIClient())
        else:
            response = case.send(APIClient())

    assert response.status_code == case.status, response.content
    documented = operation["responses"].get(str(case.status))
    assert documented, f"{case.status} is not documented for {method.upper()} {path}"
    body_schema = documented["content"]["application/json"]["schema"]
    body = response.json()
    errors = [error.message for error in validator(schema, body_schema).iter_errors(body)]
    assert errors == [], body


@pytest.mark.parametrize(
    "case", [case for case in CASES.values() if case.operation == ORDERS and case.body is not None]
)
def test_an_order_body_is_refused_exactly_when_the_schema_says_it_is_invalid(schema, case):
    request_schema = schema["paths"]["/api/orders/"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]

    valid = validator(schema, request_schema).is_valid(case.body)

    assert valid == (case.status != 400), case.body


def test_every_documented_status_is_exercised(schema):
    exercised: dict[tuple[str, str], set[str]] = {}
    for case in CASES.values():
        exercised.setdefault(case.operation, set()).add(str(case.status))

    documented = {
        operation: set(schema["paths"][operation[0]][operation[1]]["responses"])
        for operation in sales_operations(schema)
    }

    assert documented == exercised


def test_every_wrong_method_is_a_documented_405(schema, product):
    client = APIClient()
    for path, methods in schema["paths"].items():
        if path.startswith(NOT_SALES_API):
            continue
        url = path.replace("{sku}", "CP-502101").replace("{reference}", "nope")
        for wrong in {"get", "post", "put", "patch", "delete"} - set(methods):
            assert getattr(client, wrong)(url).status_code == 405, (wrong, url)
        for method in methods:
            assert "405" in methods[method]["responses"], (method, path)


def test_order_input_constraints_are_in_the_schema(schema):
    body = schema["paths"]["/api/orders/"]["post"]["requestBody"]
    order_input = schema["components"]["schemas"]["OrderInput"]

    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderInput"
    }
    one, basket = order_input["oneOf"]
    assert one["required"] == ["sku", "quantity"]
    assert one["not"] == {"required": ["items"]}
    assert basket["required"] == ["items"]
    assert basket["properties"]["items"]["maxItems"] == settings.ORDER_MAX_LINES
    assert basket["properties"]["items"]["items"]["properties"] == {
        "sku": one["properties"]["sku"],
        "quantity": one["properties"]["quantity"],
    }
    assert one["properties"]["sku"] == {
        "type": "string",
        "pattern": r"\S",
        "minLength": 1,
        "maxLength": 32,
        "description": "Surrounding spaces are trimmed.",
    }
    assert one["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": settings.ORDER_MAX_QUANTITY,
    }


def test_no_order_answer_documents_the_counting_id(schema):
    """The counting id would tell anyone how many orders the shop takes: orders go by reference."""
    components = schema["components"]["schemas"]
    for name in ("OrderOutput", "Receipt"):
        assert "reference" in components[name]["properties"], name
        assert "id" not in components[name]["properties"], name
