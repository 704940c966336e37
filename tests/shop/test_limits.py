"""Fair under a rush: purchase limits and rate limits on every order channel."""

import hashlib
import json

import pytest
from django.test import Client
from django.utils.crypto import salted_hmac
from rest_framework.test import APIClient

from inventory.models import Product
from shop.exceptions import PurchaseLimitReached
from shop.models import Order
from shop.services import place_order

# Outside any transaction, as the channels place orders: an order within its limits is the
# one-round-trip UPDATE's (shop.services._quick_sell), and one past them falls back to
# transaction.atomic, which names the limit reached.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_events")]


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


def test_a_product_limit_holds_when_the_default_is_off(settings, stocked):
    """The counts are read in the UPDATE's round trip only for limits that are on: a product's
    own limit is on even when the default is off."""
    settings.PURCHASE_LIMIT = 0
    Product.objects.filter(pk=stocked.pk).update(purchase_limit=2)
    api = APIClient()

    assert [_order(api).status_code for _ in range(3)] == [201, 201, 409]
    assert Order.objects.count() == 2


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


def test_x_forwarded_for_is_read_from_trusted_proxies_only(settings, limited):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    balancer = APIClient(REMOTE_ADDR="10.0.0.5")

    assert _order(balancer, 3, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 201
    assert _order(balancer, 3, HTTP_X_FORWARDED_FOR="203.0.113.2").status_code == 201
    # The client can prepend anything; the address the proxy appended is the one counted.
    spoofed = _order(balancer, 1, HTTP_X_FORWARDED_FOR="192.0.2.9, 203.0.113.1")
    assert spoofed.status_code == 409
    # Behind two trusted proxies, the first address from the right that is not one of them.
    two_hops = _order(balancer, 1, HTTP_X_FORWARDED_FOR="192.0.2.9, 203.0.113.1, 10.0.3.3")
    assert two_hops.status_code == 409
    # A client that reaches a web host directly cannot name another address.
    direct = APIClient(REMOTE_ADDR="203.0.113.2")
    assert _order(direct, 1, HTTP_X_FORWARDED_FOR="192.0.2.50").status_code == 409


def test_a_malformed_x_forwarded_for_counts_as_the_proxy_s_own_order(settings, limited):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    balancer = APIClient(REMOTE_ADDR="10.0.0.5")
    assert _order(balancer, 3, HTTP_X_FORWARDED_FOR="unknown").status_code == 201

    for forwarded in ("", "203.0.113.1, junk", "[2001:db8::1", ",,,", "a" * 4000):
        assert _order(balancer, 1, HTTP_X_FORWARDED_FOR=forwarded).status_code == 409
    assert _order(balancer, 1, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 201


def test_ipv6_clients_are_counted_per_64_network(settings, limited):
    settings.PURCHASE_LIMIT_PER_ADDRESS = 3
    one = APIClient(REMOTE_ADDR="2001:db8:1:2::10")
    same_network = APIClient(REMOTE_ADDR="2001:db8:1:2:ffff:ffff:ffff:1")
    next_network = APIClient(REMOTE_ADDR="2001:db8:1:3::10")
    assert _order(one, 3).status_code == 201

    assert _order(same_network, 1).status_code == 409
    assert _order(next_network, 3).status_code == 201


def test_customer_and_address_keys_are_keyed_with_the_secret(settings, limited):
    address = "198.51.100.7"
    _order(APIClient(REMOTE_ADDR=address))
    settings.SECRET_KEY = "another-secret-key-for-this-test-only"
    _order(APIClient(REMOTE_ADDR=address))

    first, second = Order.objects.order_by("id")
    assert first.customer != second.customer
    assert first.address != second.address
    # Not a bare hash of the address, which anyone could compute for every IPv4 address.
    for identity in (address, f"address:{address}"):
        assert hashlib.sha256(identity.encode()).hexdigest()[:32] != first.address
    # The keys of orders already stored still match: salted_hmac's digest.
    assert (
        second.address
        == salted_hmac(
            "shop.limits.customer", f"address:{address}", algorithm="sha256"
        ).hexdigest()[:32]
    )


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


def test_the_rate_limit_counts_per_address_whatever_the_cookies(client, settings, stocked):
    settings.ORDER_RATE_LIMIT = "2/m"
    for _ in range(2):
        client.cookies.clear()
        client.post("/order/", {"sku": "CP-502101", "quantity": 1})
    client.cookies.clear()

    response = client.post("/order/", {"sku": "CP-502101", "quantity": 1}, follow=True)

    assert "Too many orders at once; try again in" in response.content.decode()
    # The count is the address's on every channel: the API is over it too.
    assert _order(APIClient()).status_code == 429
    assert Order.objects.count() == 2


def _storefront_order(browser: Client, quantity: int = 1) -> str:
    """One order as a browser that keeps no cookies: a fresh page, its CSRF token, the order.

    Returns where the shop sent the browser: a receipt, or the storefront with a message.
    """
    browser.cookies.clear()
    token = browser.get("/").context["csrf_token"]
    response = browser.post(
        "/order/", {"sku": "CP-502101", "quantity": quantity, "csrfmiddlewaretoken": str(token)}
    )
    assert response.status_code == 302
    return response["Location"]


def _checkout(client: Client) -> str:
    return json.loads(client.post("/checkout", content_type="application/json").content)["message"]


def test_fresh_cookies_for_every_storefront_order_stop_at_the_address_ceiling(settings, limited):
    settings.PURCHASE_LIMIT_PER_ADDRESS = 5
    browser = Client(enforce_csrf_checks=True)

    answers = [_storefront_order(browser) for _ in range(8)]

    assert [answer.startswith("/orders/") for answer in answers] == [True] * 5 + [False] * 3
    orders = Order.objects.filter(channel=Order.Channel.WEB)
    assert orders.count() == 5
    assert orders.values("customer").distinct().count() == 5  # a new customer every time
    limited.refresh_from_db()
    assert limited.stock == 95
    assert limited.orders_limited == 3
    assert (
        "orders from one address may buy 5 × 부산도너츠 per hour at most (5 bought from yours)"
        in browser.get(answers[-1]).content.decode()
    )


def test_the_default_address_ceiling_is_five_customers_limits(settings, limited):
    browser = Client()

    answers = [_storefront_order(browser, quantity=3) for _ in range(6)]

    assert [answer.startswith("/orders/") for answer in answers] == [True] * 5 + [False]


def test_the_three_channels_share_one_count_per_address(settings, limited):
    settings.PURCHASE_LIMIT = 10
    settings.PURCHASE_LIMIT_PER_ADDRESS = 6
    assert _order(APIClient(), 2).status_code == 201
    assert _storefront_order(Client(), quantity=2).startswith("/orders/")
    assert _checkout(Client()) == "구매 완료! 남은 재고: 95"
    assert _storefront_order(Client(), quantity=1).startswith("/orders/")

    # Six bought from this address, each channel's orders counting for the others.
    api = _order(APIClient(), 1)
    checkout = _checkout(Client())
    web = _storefront_order(Client(), quantity=1)

    assert api.status_code == 409
    assert api.json() == {
        "code": "purchase_limit",
        "detail": "Orders from one address may buy 6 of CP-502101 per hour; "
        "6 have been bought from yours.",
        "sku": "CP-502101",
        "scope": "address",
        "limit": 6,
        "window": 3600,
        "bought": 6,
    }
    assert checkout == "구매 실패! 구매 한도 초과: 한 주소당 6개까지 구매할 수 있습니다."
    assert web == "/"
    # Another address is not held by this one's ceiling.
    assert _order(APIClient(REMOTE_ADDR="198.51.100.7"), 1).status_code == 201


def test_the_customer_limit_is_named_when_it_is_the_one_reached(settings, limited):
    settings.PURCHASE_LIMIT_PER_ADDRESS = 30
    assert _order(APIClient(), 3).status_code == 201

    body = _order(APIClient(), 1).json()

    assert (body["scope"], body["limit"], body["bought"]) == ("customer", 3, 3)


def test_checkout_counts_per_customer_and_address_like_the_api(settings, limited):
    settings.PURCHASE_LIMIT_PER_ADDRESS = 30
    # /checkout's client is its address, the same customer as on the Sales API.
    assert _order(APIClient(), 2).status_code == 201
    assert _checkout(Client()) == "구매 완료! 남은 재고: 97"

    answer = _checkout(Client())

    assert answer == "구매 실패! 구매 한도 초과: 한 사람당 3개까지 구매할 수 있습니다."
    assert _checkout(Client(REMOTE_ADDR="198.51.100.7")) == "구매 완료! 남은 재고: 96"


@pytest.mark.parametrize(
    ("per_address", "orders", "refused"),
    [
        # The storefront customer's 3 count for the address, not for the API client.
        (20, [("s1", 3), ("A", 3)], ("A", 1, PurchaseLimitReached.CUSTOMER, 3)),
        # The address's ceiling counts both channels.
        (5, [("s1", 3), ("A", 2)], ("A", 1, PurchaseLimitReached.ADDRESS, 5)),
        # With the ceiling off, the API client's own count still holds.
        (0, [("s1", 3), ("A", 3)], ("A", 1, PurchaseLimitReached.CUSTOMER, 3)),
    ],
)
def test_an_api_client_s_count_is_its_own_orders_of_its_address(
    settings, stocked, per_address, orders, refused
):
    """An API client's key is its address's: one range of the address's orders counts both
    (the storefront customer "s1" ordered from the same address "A")."""
    settings.PURCHASE_LIMIT = 3
    settings.PURCHASE_LIMIT_PER_ADDRESS = per_address
    for customer, quantity in orders:
        place_order(sku="CP-502101", quantity=quantity, customer=customer, address="A")

    customer, quantity, scope, bought = refused
    with pytest.raises(PurchaseLimitReached) as limited:
        place_order(sku="CP-502101", quantity=quantity, customer=customer, address="A")
    assert (limited.value.scope, limited.value.bought) == (scope, bought)
