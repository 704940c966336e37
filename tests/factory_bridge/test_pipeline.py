"""Orders to SNS to SQS over a real moto server: what each queue receives, and how often.

Transactional tests: the outbox relay runs on commit (inline, Q_CLUSTER sync=True), so by
the time an order returns its events are in SNS, and moto has fanned them out to SQS.
"""

import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django_q.conf import Conf

from factory_bridge.services.outbox import backlog, relay_outbox
from inventory.models import Product
from inventory.services import refresh_estimates, set_stock
from nudged.core.models import OutboxEvent
from shop.exceptions import OutOfStock
from shop.models import Order
from shop.services import place_order
from tests.factory_bridge.sqs import drain, messages_in

pytestmark = pytest.mark.django_db(transaction=True)

SKU = "CP-502101"
ORIGINAL_ATTRIBUTES = (
    "MessageAttributeProductId",
    "MessageAttributeFactoryId",
    "MessageAttributeProductCnt",
    "MessageAttributeRequester",
)


def envelope(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])


def attributes(message: dict[str, Any]) -> dict[str, str]:
    """The SNS message attributes as the original consumers read them."""
    return {name: a["Value"] for name, a in envelope(message)["MessageAttributes"].items()}


def event(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(envelope(message)["Message"])


def events_in(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a message carries: a sales batch many, any other message one."""
    body = event(message)
    return body["events"] if body["type"] == "sales.batch" else [body]


def event_types(messages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["type"] for m in messages for e in events_in(m))


def order(sku: str = SKU, quantity: int = 1) -> str:
    try:
        place_order(sku=sku, quantity=quantity)
    except OutOfStock:
        return "rejected"
    return "completed"


def by_type(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        found.setdefault(attributes(message)["EventType"], []).append(message)
    return found


def test_an_order_that_empties_a_product_sends_one_depletion_to_restock(aws, product):
    place_order(sku=SKU, quantity=3)

    received = by_type(drain(aws, "nudged-restock"))
    assert set(received) == {"stock.depleted", "stock.low"}
    [message] = received["stock.depleted"]
    body = envelope(message)
    assert body["Type"] == "Notification"
    assert body["Subject"] == "도너츠 재고 부족"
    assert body["TopicArn"].endswith(":nudged-stock-events")
    for name, attribute in body["MessageAttributes"].items():
        assert attribute["Type"] == "String", name
        assert isinstance(attribute["Value"], str) and attribute["Value"], name
    assert attributes(message) == {
        "EventType": "stock.depleted",
        "MessageAttributeProductId": SKU,
        "MessageAttributeFactoryId": "FF-500293",
        "MessageAttributeProductCnt": "10",
        "MessageAttributeRequester": settings.FACTORY_REQUESTER,
    }
    assert all(attributes(message)[name] for name in ORIGINAL_ATTRIBUTES)
    depletion = OutboxEvent.objects.get(event_type="stock.depleted")
    assert event(message)["event_id"] == str(depletion.pk)
    assert event(message)["type"] == "stock.depleted"
    assert event(message)["sku"] == SKU
    assert depletion.published_at is not None
    # The reorder decided in the same transaction: what the restock consumer orders.
    [low] = received["stock.low"]
    decision = product.decisions.get()
    assert attributes(low)["MessageAttributeProductCnt"] == str(decision.quantity) == "10"
    assert event(low)["decision_id"] == decision.pk
    assert event(low)["reason"].startswith("empty with nothing on order")
    assert drain(aws, "nudged-restock") == []


def test_ops_receives_every_event_exactly_once(aws, product):
    outcomes = [order() for _ in range(5)]
    refresh_estimates()  # the estimates loop: refusals go out in aggregate

    assert outcomes == ["completed"] * 3 + ["rejected"] * 2
    ops = drain(aws, "nudged-ops")
    assert event_types(ops) == {
        "order.completed": 3,
        "orders.refused": 1,
        "stock.depleted": 1,
        "stock.low": 1,
    }
    # The sales topic's events of a product go many to a message: the sales and the refusals.
    batched = [e for m in by_type(ops)["sales.batch"] for e in events_in(m)]
    [refused] = [e for e in batched if e["type"] == "orders.refused"]
    assert (refused["refused_orders"], refused["refused_units"]) == (2, 2)
    # Each sale went out as it committed (the relay runs inline here), named by its order.
    sales = [e for e in batched if e["type"] == "order.completed"]
    assert sorted(e["order_id"] for e in sales) == list(
        Order.objects.order_by("pk").values_list("pk", flat=True)
    )
    assert sorted(e["stock"] for e in sales) == [0, 1, 2]
    assert not Order.objects.filter(published_at__isnull=True).exists()
    rows = [e["event_id"] for e in batched if e["type"] != "order.completed"]
    rows += [event(m)["event_id"] for m in ops if event(m)["type"] != "sales.batch"]
    outbox = OutboxEvent.objects.values_list("pk", flat=True)
    assert sorted(rows) == sorted(str(pk) for pk in outbox)
    ids = [e["event_id"] for m in ops for e in events_in(m)]
    assert len(ids) == len(set(ids)) == 6
    assert event_types(drain(aws, "nudged-restock")) == {"stock.depleted": 1, "stock.low": 1}
    assert backlog()["pending"] == 0


def test_restock_queue_receives_nothing_but_reorder_events(aws, product):
    Product.objects.filter(pk=product.pk).update(stock=50)

    outcomes = [order(quantity=q) for q in (1, 2, 3, 4, 5)]

    assert outcomes == ["completed"] * 5
    assert event_types(drain(aws, "nudged-ops")) == {"order.completed": 5}
    assert drain(aws, "nudged-restock") == []


def test_refusals_while_stock_remains_send_nothing_to_restock(aws, product):
    outcomes = [order(quantity=1), order(quantity=5), order(quantity=3)]

    assert outcomes == ["completed", "rejected", "rejected"]
    product.refresh_from_db()
    assert product.stock == 2
    assert event_types(drain(aws, "nudged-ops")) == {"order.completed": 1}
    assert drain(aws, "nudged-restock") == []


def _api(client: Client) -> None:
    client.post("/api/orders/", {"sku": SKU, "quantity": 1}, content_type="application/json")


def _checkout(client: Client) -> None:
    client.post("/checkout", "{}", content_type="application/json")


def _storefront(client: Client) -> None:
    client.post("/order/", {"sku": SKU, "quantity": 1})


@pytest.mark.parametrize(
    ("buy", "channel"),
    [
        pytest.param(_api, Order.Channel.API, id="api"),
        pytest.param(_checkout, Order.Channel.LEGACY, id="checkout"),
        pytest.param(_storefront, Order.Channel.WEB, id="storefront"),
    ],
)
def test_every_channel_emits_the_same_events(
    aws, product, client: Client, buy: Callable[[Client], None], channel: str
):
    for _ in range(4):
        buy(client)

    assert list(Order.objects.order_by("id").values_list("channel", "status")) == [
        (channel, "completed"),
        (channel, "completed"),
        (channel, "completed"),
    ]
    product.refresh_from_db()
    assert product.orders_refused == 1
    ops = drain(aws, "nudged-ops")
    assert event_types(ops) == {"order.completed": 3, "stock.depleted": 1, "stock.low": 1}
    for message in ops:
        sent = attributes(message)
        # Stock events ask for the reorder's quantity; a sales batch carries its units.
        units = sum(e["quantity"] for e in events_in(message))
        quantity = str(units) if sent["EventType"] == "sales.batch" else "10"
        assert sent == {
            "EventType": sent["EventType"],
            "MessageAttributeProductId": SKU,
            "MessageAttributeFactoryId": "FF-500293",
            "MessageAttributeProductCnt": quantity,
            "MessageAttributeRequester": settings.FACTORY_REQUESTER,
        }
    [depletion] = by_type(drain(aws, "nudged-restock"))["stock.depleted"]
    assert envelope(depletion)["Subject"] == "도너츠 재고 부족"


def test_a_depletion_after_a_restock_is_a_new_depletion(aws, product):
    place_order(sku=SKU, quantity=3)
    set_stock(sku=SKU, quantity=2, note="counted")
    place_order(sku=SKU, quantity=2)

    received = by_type(drain(aws, "nudged-restock"))

    depletions = received["stock.depleted"]
    assert len(depletions) == 2
    # The first depletion's reorder is still on order: the second one decides nothing new.
    assert len(received["stock.low"]) == 1
    assert len({event(m)["event_id"] for m in depletions}) == 2
    assert OutboxEvent.objects.filter(event_type="stock.depleted").count() == 2


def test_refusals_of_a_product_already_depleted_send_no_new_depletion(aws, product):
    place_order(sku=SKU, quantity=3)

    outcomes = [order() for _ in range(5)]

    assert outcomes == ["rejected"] * 5
    assert event_types(drain(aws, "nudged-restock")) == {"stock.depleted": 1, "stock.low": 1}


def test_two_hundred_concurrent_refusals_make_one_depletion(aws, product, monkeypatch):
    buyers = 200
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=None)
    # As in the web process, orders only enqueue the relay; it runs once after the race.
    monkeypatch.setattr(Conf, "SYNC", False)
    # MariaDB allows 151 connections: 50 threads at a time, each buyer closing its own.
    start = threading.Event()

    def buy() -> str:
        start.wait(timeout=30)
        try:
            return order()
        except Exception as exc:
            return repr(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(buy) for _ in range(buyers)]
        start.set()
        outcomes = Counter(f.result(timeout=120) for f in futures)

    assert outcomes == {"rejected": buyers}
    # A flood of refusals costs no row and no event each: one depletion, one reorder.
    assert OutboxEvent.objects.filter(event_type="stock.depleted").count() == 1
    assert OutboxEvent.objects.count() == 2
    product.refresh_from_db()
    assert (product.orders_refused, product.on_order) == (buyers, 10)
    report = relay_outbox()
    assert (report.published, report.failed) == (2, 0)
    assert backlog()["pending"] == 0
    assert event_types(drain(aws, "nudged-restock")) == {"stock.depleted": 1, "stock.low": 1}
    assert messages_in(aws, "nudged-ops") == 2
