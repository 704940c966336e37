"""The restock consumer against moto and the factory simulator: once per depletion, no loss.

Plain `db` tests: events are relayed by calling relay_outbox() (on_commit does not run), and
the simulator's callback is posted by the test itself through the Django test client.
"""

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from factory_bridge.models import MessageFailure, OutboxEvent, RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.provisioning import provision
from factory_bridge.services.restock import callback_token, consume_restock, reorder_overdue
from factory_bridge.simulator import FactorySimulator
from inventory.models import Factory, Product, StockAdjustment
from inventory.services import set_stock
from shop.services import place_order
from tests.factory_bridge.sqs import drain, queue_url, sqs_client

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


def consume_all() -> Counter[str]:
    """Run the consumer until a round receives nothing; return the summed outcomes."""
    total: Counter[str] = Counter()
    while outcomes := consume_restock(wait=0).outcomes:
        total.update(outcomes)
    return total


def placed(simulator: FactorySimulator) -> list[str]:
    """The SKUs the factory was asked to make, in order."""
    return [r["body"]["MessageAttributeProductId"] for r in simulator.received]


@pytest.fixture
def simulator(settings) -> Iterator[FactorySimulator]:
    """The factory, far too slow to call back during a test: tests post the callback."""
    factory = FactorySimulator(port=0, delay=60)
    factory.start()
    settings.FACTORY_API_URL = factory.url
    yield factory
    factory.stop()


@pytest.fixture
def second_product(factory: Factory) -> Product:
    return Product.objects.create(
        sku="CP-502102", name="우유 생크림 도넛", price=3900, stock=1, factory=factory
    )


def test_the_same_depletion_delivered_twice_orders_from_the_factory_once(aws, product, simulator):
    deplete(product)
    [message] = drain(aws, "nudged-restock")
    send(aws, "nudged-restock", message["Body"])
    send(aws, "nudged-restock", message["Body"])

    outcomes = consume_all()

    assert outcomes == {"ordered": 1, "duplicate": 1}
    assert placed(simulator) == ["CP-502101"]
    request = RestockRequest.objects.get()
    assert request.status == RestockRequest.Status.REQUESTED
    assert request.factory_job_id == simulator.received[0]["id"]
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
    assert consume_all() == {"ordered": 1}
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
    assert "connection" in stuck.last_error

    deplete(second_product)
    assert consume_restock(wait=0).outcomes == {"retry": 1}
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
    assert Counter(
        json.loads(m["Body"])["MessageAttributes"]["EventType"]["Value"] for m in ops
    ) == {"order.completed": 2, "stock.depleted": 2}


def _requested(product: Product, *, age: timedelta, key: str) -> RestockRequest:
    return RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=product.restock_quantity,
        status=RestockRequest.Status.REQUESTED,
        depletion_key=key,
        factory_job_id=f"job-{key}",
        requested_at=timezone.now() - age,
    )


def test_an_overdue_request_is_ordered_again_exactly_once(
    product, second_product, simulator, settings
):
    overdue = timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60)
    late = _requested(product, age=overdue, key="depletion-late")
    recent = _requested(second_product, age=timedelta(seconds=10), key="depletion-recent")

    [reorder] = reorder_overdue()

    late.refresh_from_db()
    reorder.refresh_from_db()
    recent.refresh_from_db()
    assert late.status == RestockRequest.Status.OVERDUE
    assert reorder.replaces == late
    assert reorder.status == RestockRequest.Status.REQUESTED
    assert reorder.quantity == late.quantity
    assert recent.status == RestockRequest.Status.REQUESTED
    [job] = simulator.received
    assert reorder.factory_job_id == job["id"]
    assert job["body"]["MessageAttributeProductId"] == "CP-502101"
    assert job["body"]["MessageAttributeProductCnt"] == "10"
    assert job["body"]["CallbackUrl"].endswith(f"/factory/callbacks/{callback_token(reorder)}/")

    assert reorder_overdue() == []
    assert len(simulator.received) == 1


def test_a_reorder_the_factory_refused_is_placed_by_the_next_sweep(product, simulator, settings):
    _requested(
        product,
        age=timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60),
        key="depletion-late",
    )
    factory_url, settings.FACTORY_API_URL = settings.FACTORY_API_URL, CLOSED_URL

    [reorder] = reorder_overdue()

    reorder.refresh_from_db()
    assert reorder.status == RestockRequest.Status.PENDING
    assert "connection" in reorder.last_error

    settings.FACTORY_API_URL = factory_url
    assert reorder_overdue() == []
    assert reorder_overdue() == []

    reorder.refresh_from_db()
    assert reorder.status == RestockRequest.Status.REQUESTED
    assert len(simulator.received) == 1


def test_a_request_that_never_gets_its_callback_is_reordered_every_timeout(
    product, simulator, settings
):
    overdue = timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60)
    _requested(product, age=overdue, key=str(uuid.uuid4()))

    for _ in range(8):
        RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED).update(
            requested_at=timezone.now() - overdue
        )
        assert len(reorder_overdue()) == 1

    assert RestockRequest.objects.filter(status=RestockRequest.Status.OVERDUE).count() == 8
    assert len(simulator.received) == 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_reorder_once(product, settings):
    _requested(
        product,
        age=timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60),
        key="depletion-late",
    )
    start = threading.Barrier(2)

    def sweep(_: int) -> int:
        try:
            start.wait(timeout=10)
            return len(reorder_overdue())
        finally:
            connection.close()

    with FactorySimulator(port=0, delay=60, latency=1.0) as slow_factory:
        settings.FACTORY_API_URL = slow_factory.url
        with ThreadPoolExecutor(max_workers=2) as pool:
            reorders = sum(pool.map(sweep, range(2)))

        assert reorders == 1
        assert len(slow_factory.received) == 1
