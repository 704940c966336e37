"""Fair under a rush: purchase limits and rate limits on every order channel."""

import json

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from inventory.models import Product
from shop.models import Order

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture(autouse=True)
def fresh_counts(db):  # type: ignore[no-untyped-def]
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def stocked(product):  # type: ignore[no-untyped-def]
    Product.objects.filter(pk=product.pk).update(stock=100)
    return product


@pytest.fixture
def limited(settings, stocked):  # type: ignore[no-untyped-def]
    settings.PURCHASE_LIMIT = 3
    settings.PURCHASE_LIMIT_WINDOW = 3600
    return stocked


def _order(api: APIClient, quantity: int = 1, **headers: str):  # type: ignore[no-untyped-def]
    return api.post(
        "/api/orders/", {"sku": "CP-502101", "quantity": quantity}, format="json", **headers
    )


def test_api_purchase_limit_refuses_the_order_that_would_pass_it(limited):
    api = APIClient()
    assert _order(api, 2).status_code == 201

    response = _order(api, 2)

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "purchase_limit"
    assert body["detail"] == "One customer may buy 3 of CP-502101 per hour; you have bought 2."
    assert _order(api, 1).status_code == 201  # exactly up to the limit
    limited.refresh_from_db()
    assert limited.stock == 97
    assert limited.orders_limited == 1
    assert limited.units_sold == 3


def test_a_product_may_override_the_limit(limited):
    Product.objects.filter(pk=limited.pk).update(purchase_limit=0)

    assert _order(APIClient(), 10).status_code == 201


def test_limits_count_per_address_for_api_clients(limited):
    first, second = APIClient(REMOTE_ADDR="10.0.0.1"), APIClient(REMOTE_ADDR="10.0.0.2")

    assert _order(first, 3).status_code == 201
    assert _order(second, 3).status_code == 201
    assert _order(first, 1).status_code == 409


def test_x_forwarded_for_is_ignored_without_trusted_proxies(limited):
    api = APIClient()
    assert _order(api, 3, HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 201

    # Another claimed address from the same connection is still the same customer.
    assert _order(api, 1, HTTP_X_FORWARDED_FOR="10.2.2.2").status_code == 409


def test_x_forwarded_for_names_the_customer_behind_num_proxies(settings, limited):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    api = APIClient()

    assert _order(api, 3, HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 201
    assert _order(api, 3, HTTP_X_FORWARDED_FOR="10.2.2.2").status_code == 201
    # The client can prepend anything; the address the proxy appended is the one counted.
    spoofed = _order(api, 1, HTTP_X_FORWARDED_FOR="10.9.9.9, 10.1.1.1")
    assert spoofed.status_code == 409


def test_api_rate_limit_answers_429_with_retry_after(settings, stocked):
    settings.ORDER_RATE_LIMIT = "2/m"
    api = APIClient()
    assert [_order(api).status_code for _ in range(2)] == [201, 201]

    response = _order(api)

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["code"] == "throttled"
    assert Order.objects.count() == 2


def test_rate_limit_off(settings, stocked):
    settings.ORDER_RATE_LIMIT = "off"
    api = APIClient()

    assert {_order(api).status_code for _ in range(5)} == {201}


def test_checkout_keeps_its_contract_when_limited(client, limited):
    answers = [
        json.loads(client.post("/checkout", content_type="application/json").content)["message"]
        for _ in range(4)
    ]

    assert answers[:3] == [
        "구매 완료! 남은 재고: 99",
        "구매 완료! 남은 재고: 98",
        "구매 완료! 남은 재고: 97",
    ]
    assert answers[3] == "구매 실패! 구매 한도 초과: 한 사람당 3개까지 구매할 수 있습니다."


def test_checkout_keeps_its_contract_when_throttled(client, settings, stocked):
    settings.ORDER_RATE_LIMIT = "1/m"
    assert client.post("/checkout", content_type="application/json").status_code == 200

    response = client.post("/checkout", content_type="application/json")

    assert response.status_code == 200
    message = json.loads(response.content)["message"]
    assert message.startswith("구매 실패! 요청이 너무 많습니다.")


def test_storefront_limits_each_browser_session(client, limited):
    page = client.get("/").content.decode()
    assert "Up to 3 per customer per hour." in page
    client.post("/order/", {"sku": "CP-502101", "quantity": 3})

    response = client.post("/order/", {"sku": "CP-502101", "quantity": 1}, follow=True)

    assert "one customer may buy 3 × 부산도너츠 at most (you have 3)" in response.content.decode()
    other = type(client)()
    other.post("/order/", {"sku": "CP-502101", "quantity": 3})
    assert Order.objects.filter(channel=Order.Channel.WEB).count() == 2


def test_storefront_rate_limit_shows_a_message(client, settings, stocked):
    settings.ORDER_RATE_LIMIT = "1/m"
    client.post("/order/", {"sku": "CP-502101", "quantity": 1})

    response = client.post("/order/", {"sku": "CP-502101", "quantity": 1}, follow=True)

    assert "Too many orders at once; try again in" in response.content.decode()
    assert Order.objects.count() == 1
