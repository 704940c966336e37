"""The original Sales API: same URLs, same bodies, same Korean messages as before."""

import json
import logging

import pytest
from django.http import HttpResponse
from django.test import Client

from inventory.models import Product
from shop.models import Order

pytestmark = pytest.mark.usefixtures("no_events")


def _checkout(client: Client) -> HttpResponse:
    """POST /checkout with no body, as the original clients (`curl -X POST`) do."""
    return client.generic("POST", "/checkout")


def _body(response: HttpResponse) -> dict:
    assert response["Content-Type"] == "application/json"
    return json.loads(response.content)


def test_product_donut(client, product):
    response = client.get("/product/donut")

    assert response.status_code == 200
    assert _body(response) == {
        "product_id": "CP-502101",
        "name": "부산도너츠",
        "price": 19900,
        "stock": 3,
        "factory_id": "FF-500293",
    }
    assert "부산도너츠".encode() in response.content
    assert b"\\u" not in response.content


def test_product_donut_missing(client, db):
    response = client.get("/product/donut")

    assert response.status_code == 400
    assert _body(response) == {"message": "상품 없음"}
    assert "상품 없음".encode() in response.content


def test_checkout_sells_one_unit_at_a_time_then_refuses(client, product):
    messages = []
    for _ in range(4):
        response = _checkout(client)
        assert response.status_code == 200
        messages.append(_body(response)["message"])

    assert messages == [
        "구매 완료! 남은 재고: 2",
        "구매 완료! 남은 재고: 1",
        "구매 완료! 남은 재고: 0",
        "구매 실패! 남은 재고: 0",
    ]
    product.refresh_from_db()
    assert product.stock == 0
    assert list(Order.objects.order_by("id").values_list("status", "channel", "quantity")) == [
        ("completed", "legacy", 1),
        ("completed", "legacy", 1),
        ("completed", "legacy", 1),
    ]
    assert product.orders_refused == 1


def test_checkout_response_is_raw_utf8(client, product):
    response = _checkout(client)

    assert "구매 완료! 남은 재고: 2".encode() in response.content
    assert b"\\u" not in response.content


def test_checkout_refusal_is_raw_utf8(client, product):
    Product.objects.filter(pk=product.pk).update(stock=0)

    response = _checkout(client)

    assert response.status_code == 200
    assert "구매 실패! 남은 재고: 0".encode() in response.content
    assert b"\\u" not in response.content


def test_checkout_with_factory_id_in_body(client, product):
    response = client.post(
        "/checkout",
        json.dumps({"MessageAttributeFactoryId": "FF-500293"}),
        content_type="application/json",
    )

    assert response.status_code == 200
    assert _body(response) == {"message": "구매 완료! 남은 재고: 2"}


def test_checkout_logs_the_factory_hint_quoted_and_truncated(client, product, caplog):
    hint = "FF-1\nINFO forged line " + "x" * 500

    with caplog.at_level(logging.INFO, logger="shop.legacy"):
        client.post(
            "/checkout",
            json.dumps({"MessageAttributeFactoryId": hint}),
            content_type="application/json",
        )

    [line] = [r.getMessage() for r in caplog.records if "factory hint" in r.getMessage()]
    assert line == f"checkout factory hint={hint[:64]!r}"
    assert "\n" not in line


@pytest.mark.parametrize("body", ["{}", "[]", '{"MessageAttributeFactoryId": ""}', "null"])
def test_checkout_with_other_json_bodies(client, product, body):
    response = client.post("/checkout", body, content_type="application/json")

    assert response.status_code == 200
    assert _body(response) == {"message": "구매 완료! 남은 재고: 2"}


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe"])
def test_checkout_malformed_body(client, product, body):
    response = client.post("/checkout", body, content_type="application/json")

    assert response.status_code == 400
    assert "message" in _body(response)
    product.refresh_from_db()
    assert product.stock == 3
    assert not Order.objects.exists()


def test_checkout_missing_product(client, db):
    response = _checkout(client)

    assert response.status_code == 400
    assert _body(response) == {"message": "상품 없음"}
    assert "상품 없음".encode() in response.content


def test_checkout_needs_no_csrf_token(product):
    response = _checkout(Client(enforce_csrf_checks=True))

    assert response.status_code == 200
    assert _body(response) == {"message": "구매 완료! 남은 재고: 2"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/checkout"),
        ("put", "/checkout"),
        ("get", "/checkout/"),
        ("post", "/checkout/now"),
        ("get", "/product"),
        ("get", "/product/"),
        ("get", "/product/donut/"),
        ("get", "/product/cake"),
        ("post", "/product/donut/extra"),
        ("post", "/checkout/x"),
        ("post", "/product/donut"),
        ("put", "/product/donut"),
        ("delete", "/product"),
    ],
)
def test_unknown_legacy_routes(product, method, path):
    # Original clients send no CSRF token: a POST gets the same JSON 404 as a GET.
    response = getattr(Client(enforce_csrf_checks=True), method)(path)

    assert response.status_code == 404
    assert _body(response) == {"error": "Not Found"}
    product.refresh_from_db()
    assert product.stock == 3


def test_checkout_takes_no_pre_order_whatever_its_body_says(client, product):
    Product.objects.filter(pk=product.pk).update(stock=0)

    response = client.post(
        "/checkout", json.dumps({"backorder": True}), content_type="application/json"
    )

    assert response.status_code == 200
    assert _body(response) == {"message": "구매 실패! 남은 재고: 0"}
    assert not Order.objects.exists()
