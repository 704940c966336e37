"""The one order path: one validator, one rate limiter, the same answers on every channel."""

import json
import threading
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from inventory.models import Product
from nudged.core import ratelimits
from shop.exceptions import InvalidOrder
from shop.models import Order
from shop.orders import OrderInput, clean_order

pytestmark = pytest.mark.usefixtures("no_events")

MAX = 100
VALID: list[tuple[Any, OrderInput]] = [
    ({"sku": "CP-502101", "quantity": 1}, OrderInput("CP-502101", 1)),
    ({"sku": " CP-502101 ", "quantity": MAX}, OrderInput("CP-502101", MAX)),
    ({"sku": "CP-502101", "quantity": 2.0}, OrderInput("CP-502101", 2)),
    ({"sku": "CP-502101", "quantity": "3"}, OrderInput("CP-502101", 3)),
    ({"sku": "X" * 32, "quantity": 1}, OrderInput("X" * 32, 1)),
    ({"sku": "CP-502101", "quantity": 1, "note": "ignored"}, OrderInput("CP-502101", 1)),
    (
        {"sku": "CP-502101", "quantity": 1, "backorder": True, "email": " a@example.com "},
        OrderInput("CP-502101", 1, backorder=True, email="a@example.com"),
    ),
    # A form's checkbox and empty optional field.
    (
        {"sku": "CP-502101", "quantity": "1", "backorder": "on", "email": ""},
        OrderInput("CP-502101", 1, backorder=True),
    ),
    ({"sku": "CP-502101", "quantity": 1, "backorder": "false"}, OrderInput("CP-502101", 1)),
]
INVALID: list[tuple[Any, dict[str, list[str]]]] = [
    ({"sku": "CP-502101", "quantity": MAX + 1}, {"quantity": [f"≤ {MAX}"]}),
    ({"sku": "CP-502101", "quantity": 0}, {"quantity": ["≥ 1"]}),
    ({"sku": "CP-502101", "quantity": -1}, {"quantity": ["≥ 1"]}),
    ({"sku": "CP-502101", "quantity": True}, {"quantity": ["integer"]}),
    ({"sku": "CP-502101", "quantity": 2.5}, {"quantity": ["integer"]}),
    ({"sku": "CP-502101", "quantity": "abc"}, {"quantity": ["integer"]}),
    ({"sku": "CP-502101", "quantity": 10**30}, {"quantity": [f"≤ {MAX}"]}),
    ({"sku": "CP-502101", "quantity": None}, {"quantity": ["null"]}),
    ({"sku": "CP-502101"}, {"quantity": ["required"]}),
    ({"quantity": 1}, {"sku": ["required"]}),
    ({"sku": "", "quantity": 1}, {"sku": ["blank"]}),
    ({"sku": "   ", "quantity": 1}, {"sku": ["blank"]}),
    ({"sku": "X" * 33, "quantity": 1}, {"sku": ["32 characters"]}),
    ({"sku": "CP\x00502101", "quantity": 1}, {"sku": ["Null characters"]}),
    ({"sku": 502101, "quantity": 1}, {"sku": ["string"]}),
    ({"sku": ["CP-502101"], "quantity": 1}, {"sku": ["string"]}),
    ({"sku": "CP-502101", "quantity": 1, "backorder": "maybe"}, {"backorder": ["boolean"]}),
    ({"sku": "CP-502101", "quantity": 1, "email": "nope"}, {"email": ["valid email"]}),
    ({"sku": "", "quantity": 0}, {"sku": ["blank"], "quantity": ["≥ 1"]}),
    (["CP-502101", 1], {"non_field_errors": ["got list"]}),
    ("CP-502101", {"non_field_errors": ["got str"]}),
    (None, {"non_field_errors": ["got null"]}),
]
WORDS = {"≥ 1": "greater than or equal to 1", f"≤ {MAX}": f"less than or equal to {MAX}"}


@pytest.mark.parametrize(("body", "expected"), VALID, ids=repr)
def test_clean_order_takes(body, expected, settings):
    settings.ORDER_MAX_QUANTITY = MAX

    assert clean_order(body) == expected


@pytest.mark.parametrize(("body", "expected"), INVALID, ids=repr)
def test_clean_order_refuses_naming_every_bad_field(body, expected, settings):
    settings.ORDER_MAX_QUANTITY = MAX

    with pytest.raises(InvalidOrder) as invalid:
        clean_order(body)

    assert set(invalid.value.errors) == set(expected)
    for name, fragments in expected.items():
        text = " ".join(invalid.value.errors[name])
        for fragment in fragments:
            assert WORDS.get(fragment, fragment) in text, (name, text)


def test_the_quantity_bound_is_read_from_settings(settings):
    settings.ORDER_MAX_QUANTITY = 5

    with pytest.raises(InvalidOrder):
        clean_order({"sku": "CP-502101", "quantity": 6})
    assert clean_order({"sku": "CP-502101", "quantity": 5}).quantity == 5


# --- Every channel, the same answers ----------------------------------------------------


@pytest.fixture
def stocked(product):  # type: ignore[no-untyped-def]
    Product.objects.filter(pk=product.pk).update(stock=500)
    return product


class Channels:
    """One client address, ordering through each channel; each answer read as an outcome."""

    def __init__(self, address: str = "203.0.113.9") -> None:
        self.api = APIClient(REMOTE_ADDR=address)
        self.web = Client(REMOTE_ADDR=address)
        self.legacy = Client(REMOTE_ADDR=address)

    def order(self, channel: str, body: dict[str, Any]) -> str:
        if channel == "api":
            answer = self.api.post("/api/orders/", body, format="json")
            return "ok" if answer.status_code == 201 else answer.json()["code"]
        if channel == "web":
            form = {name: value for name, value in body.items() if value is not None}
            page = self.web.post("/order/", form, follow=True)
            if page.redirect_chain and "/orders/" in page.redirect_chain[-1][0]:
                return "ok"
            text = page.content.decode()
            for code, words in WEB_MESSAGES.items():
                if words in text:
                    return code
            raise AssertionError(text)
        answer = json.loads(self.legacy.post("/checkout", content_type="application/json").content)
        message = answer["message"]
        if message.startswith("구매 완료!"):
            return "ok"
        for code, words in LEGACY_MESSAGES.items():
            if words in message:
                return code
        raise AssertionError(message)


WEB_MESSAGES = {
    "invalid": "Your order could not be placed.",
    "throttled": "Too many orders at once",
    "purchase_limit": "may buy",
    "out_of_stock": "Sorry,",
}
LEGACY_MESSAGES = {"throttled": "요청이 너무 많습니다", "purchase_limit": "구매 한도 초과"}
BODIES = [
    {"sku": "CP-502101", "quantity": 1},
    {"sku": " CP-502101 ", "quantity": 2},
    {"sku": "CP-502101", "quantity": 0},
    {"sku": "CP-502101", "quantity": 101},
    {"sku": "CP-502101", "quantity": "two"},
    {"sku": "", "quantity": 1},
    {"sku": "X" * 33, "quantity": 1},
    {"sku": "CP-502101"},
    {"sku": "CP-502101", "quantity": 1, "email": "not-an-address"},
]


@pytest.mark.parametrize("body", BODIES, ids=repr)
def test_api_and_storefront_agree_on_validation(body, stocked):
    channels = Channels()

    assert channels.order("api", body) == channels.order("web", body)


@pytest.mark.parametrize("channel", ["api", "web", "legacy"])
def test_every_channel_stops_at_the_purchase_limit(channel, settings, stocked):
    settings.PURCHASE_LIMIT = 3
    channels = Channels()
    one = {"sku": "CP-502101", "quantity": 1}

    answers = [channels.order(channel, one) for _ in range(4)]

    assert answers == ["ok", "ok", "ok", "purchase_limit"]


@pytest.mark.parametrize("channel", ["api", "web", "legacy"])
def test_every_channel_stops_at_the_rate_limit(channel, settings, stocked, limit_store):
    settings.ORDER_RATE_LIMIT = "3/m"
    channels = Channels()
    one = {"sku": "CP-502101", "quantity": 1}

    answers = [channels.order(channel, one) for _ in range(4)]

    assert answers == ["ok", "ok", "ok", "throttled"]
    assert Order.objects.count() == 3


def test_the_rate_limit_counts_every_channel_of_one_address(settings, stocked, limit_store):
    settings.ORDER_RATE_LIMIT = "3/m"
    channels = Channels()
    one = {"sku": "CP-502101", "quantity": 1}

    answers = [channels.order(c, one) for c in ("api", "web", "legacy", "api", "web", "legacy")]

    assert answers == ["ok", "ok", "ok", "throttled", "throttled", "throttled"]
    # Another address has its own count.
    assert Channels("203.0.113.10").order("api", one) == "ok"


def test_concurrent_requests_pass_the_rate_limit_exactly_as_often_as_it_allows(
    settings, stocked, limit_store
):
    """Counted in the shared store, one atomic increment each: 12 requests released
    together from one address, 5 allowed."""
    settings.ORDER_RATE_LIMIT = "5/m"
    start = threading.Barrier(12)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait()
            try:
                ratelimits.check(scope="order", setting="ORDER_RATE_LIMIT", key="one-address")
            except ratelimits.RateLimited:
                outcomes.append("throttled")
            else:
                outcomes.append("ok")
        except BaseException as exc:  # handed back to the test below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert sorted(outcomes) == ["ok"] * 5 + ["throttled"] * 7


def _unchecked() -> float:
    return REGISTRY.get_sample_value("nudged_rate_limit_unchecked_total", {"scope": "order"}) or 0


def test_a_store_that_is_down_lets_orders_through_logged_and_counted(settings, stocked, caplog):
    settings.CACHE_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    settings.ORDER_RATE_LIMIT = "1/m"
    before = _unchecked()
    api = APIClient()

    answers = [
        api.post("/api/orders/", {"sku": "CP-502101", "quantity": 1}, format="json").status_code
        for _ in range(3)
    ]

    assert answers == [201, 201, 201]
    assert _unchecked() - before == 3
    failures = [r for r in caplog.records if "limit store failed" in r.getMessage()]
    assert len(failures) == 1  # once, not once per request


def test_a_store_back_up_counts_again(settings, stocked, limit_store, monkeypatch):
    settings.ORDER_RATE_LIMIT = "2/m"
    store = ratelimits._store(limit_store)
    store.failed(scope="order", error=ConnectionError("down"))
    monkeypatch.setattr(store, "down_until", 0.0)  # the retry interval has passed
    api = APIClient()

    answers = [
        api.post("/api/orders/", {"sku": "CP-502101", "quantity": 1}, format="json").status_code
        for _ in range(3)
    ]

    assert answers == [201, 201, 429]
