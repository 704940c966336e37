"""The Sales API over HTTP: products, orders and the error contract."""

import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from factory_bridge.models import RestockRequest
from inventory.models import Product
from inventory.services import set_stock
from shop.models import Order
from tests.restocks import plant_restock

pytestmark = pytest.mark.usefixtures("no_events")

ORDERS = "/api/orders/"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def sold_out(factory):  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku="CP-502105", name="제주 말차 도넛", price=4500, stock=0, factory=factory
    )


def _post(api: APIClient, body: object):  # type: ignore[no-untyped-def]
    return api.post(ORDERS, body, format="json")


def test_product_list(api, product, sold_out):
    response = api.get("/api/products/")

    assert response.status_code == 200
    assert response.json() == [
        {
            "sku": "CP-502101",
            "name": "부산도너츠",
            "price": 19900,
            "stock": 3,
            "in_stock": True,
            "incoming": 0,
            "ready_in_seconds": None,
        },
        {
            "sku": "CP-502105",
            "name": "제주 말차 도넛",
            "price": 4500,
            "stock": 0,
            "in_stock": False,
            "incoming": 0,
            "ready_in_seconds": None,
        },
    ]


def test_product_list_empty(api, db):
    response = api.get("/api/products/")

    assert response.status_code == 200
    assert response.json() == []


def test_product_detail(api, product):
    response = api.get("/api/products/CP-502101/")

    assert response.status_code == 200
    assert response.json() == {
        "sku": "CP-502101",
        "name": "부산도너츠",
        "price": 19900,
        "stock": 3,
        "in_stock": True,
        "incoming": 0,
        "ready_in_seconds": None,
    }


@pytest.mark.parametrize(
    ("status", "incoming"),
    [(RestockRequest.Status.PENDING, 0), (RestockRequest.Status.REQUESTED, 10)],
)
def test_a_count_while_a_restock_is_open_shows_only_what_the_factory_accepted(
    api, sold_out, status, incoming
):
    plant_restock(sold_out, status)
    set_stock(sku=sold_out.sku, quantity=4, note="count")

    body = api.get(f"/api/products/{sold_out.sku}/").json()

    assert (body["stock"], body["incoming"]) == (4, incoming)


@pytest.mark.parametrize(("waited", "ready_in"), [(0, 40), (15.5, 25), (39.5, 1), (300, 0)])
def test_ready_in_seconds_counts_down_the_factory_lead_time(api, sold_out, waited, ready_in):
    plant_restock(
        sold_out,
        RestockRequest.Status.REQUESTED,
        requested_at=timezone.now() - timedelta(seconds=waited),
    )

    body = api.get("/api/products/").json()

    assert (body[0]["incoming"], body[0]["ready_in_seconds"]) == (10, ready_in)


def test_ready_in_seconds_is_null_until_the_factory_accepts(api, sold_out):
    plant_restock(sold_out, RestockRequest.Status.PENDING)

    body = api.get(f"/api/products/{sold_out.sku}/").json()

    assert (body["incoming"], body["ready_in_seconds"]) == (0, None)


def test_product_detail_unknown_sku(api, product):
    response = api.get("/api/products/NOPE-1/")

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "unknown_sku"
    assert body["sku"] == "NOPE-1"
    assert body["detail"]


def test_order_created(api, product):
    response = _post(api, {"sku": "CP-502101", "quantity": 2})

    assert response.status_code == 201
    order = Order.objects.get()
    # The reference, never the counting id (which would tell how many orders the shop takes).
    assert response.json() == {
        "sku": "CP-502101",
        "quantity": 2,
        "status": "completed",
        "remaining_stock": 1,
        "reference": order.reference,
    }
    assert order.channel == Order.Channel.API
    product.refresh_from_db()
    assert product.stock == 1


def test_an_order_reads_back_by_its_reference(api, product):
    reference = _post(api, {"sku": "CP-502101", "quantity": 2}).json()["reference"]
    order = Order.objects.get()

    first = api.get(f"/api/orders/{reference}/")
    product.price = 25000
    product.save()
    again = api.get(f"/api/orders/{reference}/")

    assert first.status_code == again.status_code == 200
    assert (
        first.json()
        == again.json()
        == {
            "reference": reference,
            "sku": "CP-502101",
            "name": "부산도너츠",
            "quantity": 2,
            "unit_price": 19900,
            "total_price": 39800,
            "status": "completed",
            "created_at": timezone.localtime(order.created_at).isoformat(),
            "ready_by": None,
            "fulfilled_at": None,
            "cancel_reason": None,
        }
    )


def test_another_order_cannot_be_read_by_its_number_or_a_near_reference(api, product):
    mine = _post(api, {"sku": "CP-502101", "quantity": 1}).json()
    theirs = _post(api, {"sku": "CP-502101", "quantity": 1}).json()

    assert mine["reference"] != theirs["reference"]
    assert len(theirs["reference"]) == 32
    for guess in (
        str(Order.objects.get(reference=theirs["reference"]).pk),
        mine["reference"][:-1],
        theirs["reference"][:-1],
        "nope",
    ):
        response = api.get(f"/api/orders/{guess}/")
        assert response.status_code == 404, guess
        assert response.json() == {
            "code": "unknown_order",
            "detail": "No order with that reference.",
        }


def test_an_order_on_a_sold_out_donut_says_it_is_sold_out(api, product):
    Product.objects.filter(pk=product.pk).update(stock=0)

    response = _post(api, {"sku": "CP-502101", "quantity": 1})

    assert response.status_code == 409
    assert response.json() == {
        "code": "out_of_stock",
        "detail": "CP-502101 is sold out; 1 requested.",
        "available": 0,
    }


def test_order_out_of_stock(api, product):
    response = _post(api, {"sku": "CP-502101", "quantity": 5})

    assert response.status_code == 409
    assert response.json() == {
        "code": "out_of_stock",
        "detail": "Only 3 of CP-502101 in stock; 5 requested.",
        "available": 3,
    }
    assert not Order.objects.exists()
    product.refresh_from_db()
    assert (product.stock, product.orders_refused, product.units_refused) == (3, 1, 5)


def test_order_on_sold_out_product(api, sold_out):
    response = _post(api, {"sku": "CP-502105", "quantity": 1})

    assert response.status_code == 409
    assert response.json()["available"] == 0


def test_order_unknown_sku(api, product):
    response = _post(api, {"sku": "NOPE-1", "quantity": 1})

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "unknown_sku"
    assert body["sku"] == "NOPE-1"
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"quantity": 1}, "sku", id="missing-sku"),
        pytest.param({"sku": "CP-502101"}, "quantity", id="missing-quantity"),
        pytest.param({}, "sku", id="empty-object"),
        pytest.param({"sku": "", "quantity": 1}, "sku", id="blank-sku"),
        pytest.param({"sku": None, "quantity": 1}, "sku", id="null-sku"),
        pytest.param({"sku": "X" * 33, "quantity": 1}, "sku", id="sku-too-long"),
        pytest.param({"sku": "CP-502101", "quantity": 0}, "quantity", id="quantity-0"),
        pytest.param({"sku": "CP-502101", "quantity": -1}, "quantity", id="quantity-negative"),
        pytest.param({"sku": "CP-502101", "quantity": 1.5}, "quantity", id="quantity-fraction"),
        pytest.param({"sku": "CP-502101", "quantity": "abc"}, "quantity", id="quantity-text"),
        pytest.param({"sku": "CP-502101", "quantity": None}, "quantity", id="quantity-null"),
        pytest.param(
            {"sku": "CP-502101", "quantity": settings.ORDER_MAX_QUANTITY + 1},
            "quantity",
            id="quantity-above-max",
        ),
        pytest.param([{"sku": "CP-502101", "quantity": 1}], "non_field_errors", id="json-array"),
        pytest.param("CP-502101", "non_field_errors", id="json-string"),
    ],
)
def test_order_invalid_input(api, product, body, field):
    response = _post(api, body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert field in payload["errors"]
    assert field in payload["detail"]
    assert not Order.objects.exists()
    product.refresh_from_db()
    assert product.stock == 3


def test_order_malformed_json(api, product):
    response = api.post(
        ORDERS, '{"sku": "CP-502101", "quantity": ', content_type="application/json"
    )

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert "body" in payload["errors"]
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/xml"]
)
def test_order_non_json_content_type(api, product, content_type):
    body = urlencode({"sku": "CP-502101", "quantity": 1})

    response = api.post(ORDERS, body, content_type=content_type)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert "body" in payload["errors"]
    assert not Order.objects.exists()


def test_order_multipart_form(api, product):
    response = api.post(ORDERS, {"sku": "CP-502101", "quantity": 1}, format="multipart")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not Order.objects.exists()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_orders_endpoint_only_accepts_post(api, db, method):
    response = getattr(api, method)(ORDERS)

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_no_request_gives_a_server_error(product):
    """Throw every awkward body at the endpoint; none may end in a 500."""
    client = APIClient(raise_request_exception=False)
    bodies = [
        ("application/json", ""),
        ("application/json", "null"),
        ("application/json", "[]"),
        ("application/json", "{}"),
        ("application/json", "{bad"),
        ("application/json", json.dumps({"sku": "CP-502101", "quantity": "1e309"})),
        ("application/json", json.dumps({"sku": "CP-502101", "quantity": 10**30})),
        ("application/json", json.dumps({"sku": ["CP-502101"], "quantity": 1})),
        ("application/json", json.dumps({"sku": {"a": 1}, "quantity": {"b": 2}})),
        ("application/json", json.dumps({"sku": "CP-502101", "quantity": True})),
        ("application/json", b"\xff\xfe\x00"),
        ("text/plain", "hello"),
    ]
    statuses = {}
    for content_type, body in bodies:
        response = client.post(ORDERS, body, content_type=content_type)
        statuses[(content_type, str(body)[:40])] = response.status_code
    assert all(status < 500 for status in statuses.values()), statuses


@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
@pytest.mark.parametrize("path", ["/api", "/api/", "/api/nope", "/api/v2/orders/"])
def test_unknown_api_paths_answer_a_json_404(db, method, path):
    response = getattr(APIClient(raise_request_exception=False), method)(path)

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": f"No API endpoint at {path}."}


def test_orders_without_the_trailing_slash_points_at_the_endpoint(product):
    client = APIClient(raise_request_exception=False)

    response = client.post("/api/orders", {"sku": "CP-502101", "quantity": 1}, format="json")

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No API endpoint at /api/orders. "
        "The endpoint is /api/orders/ (with the trailing slash).",
    }
    assert not Order.objects.exists()


def test_schema(api, db):
    response = api.get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/orders/" in response.content
    assert b"Nudged Sales API" in response.content


def test_swagger_docs_are_served_without_a_cdn(api, db):
    response = api.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode().lower()
    assert "swagger" in html
    for host in ("cdn", "jsdelivr", "unpkg"):
        assert host not in html


def test_the_product_list_is_reused_for_a_moment_by_each_web_process(api, product, settings):
    from django.core.cache import caches

    settings.PRODUCT_LIST_MAX_AGE = 60
    first = api.get("/api/products/").json()
    Product.objects.filter(pk=product.pk).update(stock=7)

    # Open pages polling in a rush share one answer instead of a query each.
    assert api.get("/api/products/").json() == first
    caches["local"].clear()
    assert api.get("/api/products/").json()[0]["stock"] == 7


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "query", "status"),
    [
        ("", "", 200),
        ("*/*", "", 200),
        ("application/json", "", 200),
        ("text/html, application/json;q=0.5", "", 200),
        ("text/html", "", 406),
        ("application/json", "?format=xml", 404),
        ("application/json", "?format=json", 200),
    ],
)
def test_the_answer_is_json_for_any_accept_header_that_takes_it(product, accept, query, status):
    answer = APIClient().get(f"/api/products/{query}", HTTP_ACCEPT=accept)

    assert answer.status_code == status
    assert answer["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "CP-502101", "quantity": 1},
        {"sku": "CP-502105", "quantity": 1},  # sold out
        {"sku": "NOPE", "quantity": 1},
        {"sku": "CP-502101", "quantity": 0},
        {"sku": "CP-502101", "quantity": "1"},
        {"sku": " CP-502101", "quantity": 1},
        {"quantity": 1},
        [1, 2],
    ],
    ids=["created", "sold-out", "unknown", "zero", "string", "spaces", "no-sku", "list"],
)
def test_a_plain_json_order_is_answered_as_drf_answers_it(api, product, sold_out, body):
    """A JSON order from a client that takes JSON is answered without DRF; any other Accept
    header goes through DRF. Both answer alike."""
    Product.objects.filter(pk=product.pk).update(stock=10)
    plain = api.post(ORDERS, body, format="json", HTTP_ACCEPT="application/json")
    drf = api.post(ORDERS, body, format="json", HTTP_ACCEPT="application/json; q=0.9")

    assert plain.status_code == drf.status_code
    for name in ("Content-Type", "Allow", "Vary", "Retry-After"):
        assert plain.get(name) == drf.get(name), name
    first, second = plain.json(), drf.json()
    if plain.status_code == 201:
        assert second["remaining_stock"] == first["remaining_stock"] - 1
        for varies in ("remaining_stock", "reference"):
            first.pop(varies), second.pop(varies)
    assert first == second
