"""The restock consumer against moto and the factory simulator: once per depletion, no loss.

Plain `db` tests: events are relayed by calling relay_outbox() (on_commit does not run), and
the simulator's callback is posted by the test itself through the Django test client.
"""

import json
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from factory_bridge.models import MessageFailure, RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.provisioning import provision
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product, StockAdjustment
from inventory.services import set_stock
from nudged.core.models import OutboxEvent
from shop.services import place_order
from tests.factory_bridge.sqs import drain, ops_events, queue_url, sqs_client

pytestmark = pytest.mark.django_db

CLOSED_URL = "http://127.0.0.1:1"


def send(endpoint: str, queue: str, body: str) -> None:
    sqs_client(endpoint).send_message(QueueUrl=queue_url(endpoint, queue), MessageBody=body)


def messages_in(endpoint: str, queue: str) -> int:
    """Visible plus in-flight messages of `queue`."""
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue_url(endpoint, queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def product_id_of(message: dict[str, Any]) -> str:
    return json.loads(message["Body"])["MessageAttributes"]["MessageAttributeProductId"]["Value"]


def deplete(product: Product) -> None:
    """Sell what is left of `product` and publish the events, as the relay would on commit."""
    product.refresh_from_db()
    place_order(sku=product.sku, quantity=product.stock)
    relay_outbox()


def reorder_message(endpoint: str) -> dict[str, Any]:
    """Take what a sale that empties a product sent to the restock queue: its depletion and the
    reorder decided with it; return the reorder (the depletion is absorbed by it anyway)."""
    messages = {event_type_of(m): m for m in drain(endpoint, "nudged-restock")}
    assert set(messages) == {"stock.depleted", "stock.low"}
    return messages["stock.low"]


def event_type_of(message: dict[str, Any]) -> str:
    return json.loads(message["Body"])["MessageAttributes"]["EventType"]["Value"]


def consume_all() -> Counter[str]:
    """Run the consumer until a round receives nothing; return the summed outcomes."""
    total: Counter[str] = Counter()
    while outcomes := consume_restock(wait=0).outcomes:
        total.update(outcomes)
    return total


def placed(simulator: FactorySimulator) -> list[str]:
    """The SKUs the factory was asked to make, in order."""
    return [r["body"]["MessageAttributeProductId"] for r in simulator.received]


def test_the_same_depletion_delivered_twice_orders_from_the_factory_once(aws, product, simulator):
    deplete(product)
    message = reorder_message(aws)
    send(aws, "nudged-restock", message["Body"])
    send(aws, "nudged-restock", message["Body"])

    outcomes = consume_all()

    assert outcomes == {"ordered": 1, "duplicate": 1}
    assert placed(simulator) == ["CP-502101"]
    request = RestockRequest.objects.get()
    assert request.status == RestockRequest.Status.REQUESTED
    assert request.factory_job_id == simulator.received[0]["id"]
    assert simulator.received[0]["body"]["IdempotencyKey"] == request.depletion_key
    assert request.depletion_key == json.loads(json.loads(message["Body"])["Message"])["event_id"]
    assert messages_in(aws, "nudged-restock") == 0


def test_the_same_callback_twice_adds_stock_once(aws, product, simulator, client: Client):
    deplete(product)
    consume_all()
    [job] = simulator.received
    path = urlsplit(job["body"]["CallbackUrl"]).path

    answers = [
        client.post(path, json.dumps(job["body"]), content_type="application/json")
        for _ in range(2)
    ]

    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["added"] for a in answers] == [10, 0]
    assert [a.json()["stock"] for a in answers] == [10, 10]
    product.refresh_from_db()
    assert product.stock == 10
    assert product.depleted_at is None
    assert RestockRequest.objects.get().status == RestockRequest.Status.FULFILLED
    assert StockAdjustment.objects.filter(reason=StockAdjustment.Reason.ARRIVAL).count() == 1
    assert OutboxEvent.objects.filter(event_type="stock.replenished").count() == 1


def test_another_depletion_while_a_request_is_open_does_not_order_again(aws, product, simulator):
    deplete(product)
    assert consume_all() == {"ordered": 1, "absorbed": 1}
    set_stock(sku=product.sku, quantity=1, note="found one in the back")
    deplete(product)
    assert OutboxEvent.objects.filter(event_type="stock.depleted").count() == 2

    outcomes = consume_all()

    assert outcomes == {"absorbed": 1}
    assert placed(simulator) == ["CP-502101"]
    assert RestockRequest.objects.count() == 1
    assert messages_in(aws, "nudged-restock") == 0


def test_an_unreadable_message_goes_straight_to_the_dlq(aws, simulator):
    send(aws, "nudged-restock", "hello")

    report = consume_restock(wait=0)

    assert report.outcomes == {"unreadable": 1}
    assert messages_in(aws, "nudged-restock") == 0
    assert [m["Body"] for m in drain(aws, "nudged-restock-dlq")] == ["hello"]
    failure = MessageFailure.objects.get()
    assert failure.error.startswith("parse error")
    assert failure.queue == "nudged-restock"
    assert failure.attempts == 1
    assert simulator.received == []


@pytest.fixture
def short_redrive(aws: str, settings) -> str:
    """Redelivery after 1 s and the DLQ after 3 receives (the aws fixture used the defaults)."""
    settings.SQS_VISIBILITY_TIMEOUT = 1
    settings.SQS_MAX_RECEIVE_COUNT = 3
    assert ("queue", "nudged-restock", "updated") in provision().rows
    return aws


def test_factory_down_dead_letters_the_depletion_and_other_products_still_get_restocked(
    short_redrive, product, second_product, settings
):
    endpoint = short_redrive
    settings.FACTORY_API_URL = CLOSED_URL
    deplete(product)

    deadline = time.monotonic() + 20
    while messages_in(endpoint, "nudged-restock-dlq") == 0:
        assert time.monotonic() < deadline, "the depletion never reached the DLQ"
        consume_restock(wait=1)

    failure = MessageFailure.objects.get()
    assert f"factory connection: cannot connect to {CLOSED_URL}/api/manufactures" in failure.error
    assert failure.attempts == settings.SQS_MAX_RECEIVE_COUNT
    stuck = RestockRequest.objects.get(product=product)
    assert stuck.status == RestockRequest.Status.PENDING
    assert stuck.attempts == settings.SQS_MAX_RECEIVE_COUNT
    assert stuck.last_error == "factory unreachable"

    deplete(second_product)
    assert consume_restock(wait=0).outcomes == {"retry": 1, "absorbed": 1}
    with FactorySimulator(port=0, delay=60) as simulator:
        settings.FACTORY_API_URL = simulator.url
        deadline = time.monotonic() + 10
        while not simulator.received:
            assert time.monotonic() < deadline, "the second depletion was never ordered"
            consume_restock(wait=1)

        assert placed(simulator) == ["CP-502102"]
    second = RestockRequest.objects.get(product=second_product)
    assert second.status == RestockRequest.Status.REQUESTED
    assert messages_in(endpoint, "nudged-restock") == 0
    assert [product_id_of(m) for m in drain(endpoint, "nudged-restock-dlq")] == ["CP-502101"]
    ops = drain(endpoint, "nudged-ops")
    assert Counter(e["type"] for e in ops_events(ops)) == {
        "order.completed": 2,
        "stock.depleted": 2,
        "stock.low": 2,
    }


def test_the_consumer_and_the_callback_log_the_ids_they_handle(
    aws, product, simulator, client: Client, json_logs
):
    deplete(product)
    reorder = reorder_message(aws)
    sqs, url = sqs_client(aws), queue_url(aws, "nudged-restock")
    reorder_id = sqs.send_message(QueueUrl=url, MessageBody=reorder["Body"])["MessageId"]
    unreadable_id = sqs.send_message(QueueUrl=url, MessageBody="hello")["MessageId"]

    consume_all()
    [job] = simulator.received
    answer = client.post(
        urlsplit(job["body"]["CallbackUrl"]).path,
        json.dumps(job["body"]),
        content_type="application/json",
    )

    assert answer.status_code == 200
    restock = RestockRequest.objects.get()
    ids = ("request_id", "order_id", "restock_id", "sqs_message_id")
    logged = {
        line["message"].split(" restock=")[0].split(":")[0]: {k: line[k] for k in ids if k in line}
        for line in json_logs()
    }
    assert logged["factory order placed"] == {
        "restock_id": restock.pk,
        "sqs_message_id": reorder_id,
    }
    assert logged[f"message={unreadable_id} sent to the DLQ"] == {"sqs_message_id": unreadable_id}
    assert logged["stock arrived"] == {
        "request_id": answer["X-Request-ID"],
        "restock_id": restock.pk,
    }
    # The order placed outside any request (deplete) left nothing behind.
    assert logged[f"stock depleted sku={product.sku}"] == {}
