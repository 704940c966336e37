"""The restock consumer against moto and the factory simulator: once per depletion, no loss.

Plain `db` tests: events are relayed by calling relay_outbox() (on_commit does not run), and
the simulator's callback is posted by the test itself through the Django test client.
"""

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connection
from django.test import Client
from django.utils import timezone

from factory_bridge import aws as aws_clients
from factory_bridge.models import MessageFailure, OutboxEvent, RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.provisioning import provision
from factory_bridge.services.restock import (
    SweepReport,
    callback_restock_id,
    consume_restock,
    reorder_overdue,
)
from factory_bridge.simulator import FactorySimulator
from inventory.models import Factory, Product, StockAdjustment
from inventory.services import set_stock
from shop.exceptions import OutOfStock
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


@pytest.fixture
def second_product(factory: Factory) -> Product:
    return Product.objects.create(
        sku="CP-502102", name="우유 생크림 도넛", price=3900, stock=1, factory=factory
    )


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


def _pending(product: Product, *, key: str = "depletion-lost") -> RestockRequest:
    """A restock the factory never accepted, with no queue message behind it."""
    return RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=product.restock_quantity,
        depletion_key=key,
    )


def make_due(request: RestockRequest) -> None:
    """Bring the request's next attempt to now, as if its backoff had passed."""
    RestockRequest.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())


def sold_out(product: Product) -> None:
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())


def test_a_pending_request_with_no_queue_message_is_ordered_by_the_sweep(aws, product, simulator):
    request = _pending(product)
    assert messages_in(aws, "nudged-restock") == 0

    report = reorder_overdue()

    assert report == SweepReport(placed=[request.pk])
    request.refresh_from_db()
    assert request.status == RestockRequest.Status.REQUESTED
    assert request.get_status_display() == "In production"
    assert request.next_attempt_at is None
    [job] = simulator.received
    assert request.factory_job_id == job["id"]
    assert job["body"]["IdempotencyKey"] == "depletion-lost"
    assert reorder_overdue() == SweepReport()


def test_a_restock_whose_message_was_lost_with_the_local_queues_is_still_ordered(
    aws, product, simulator, settings
):
    factory_url, settings.FACTORY_API_URL = settings.FACTORY_API_URL, CLOSED_URL
    deplete(product)
    assert consume_restock(wait=0).outcomes == {"retry": 1, "absorbed": 1}
    request = RestockRequest.objects.get()
    assert request.status == RestockRequest.Status.PENDING
    assert request.get_status_display() == "Waiting for the factory"
    assert request.last_error == "factory unreachable"

    # The local AWS endpoint restarts: every queue comes back empty.
    requests.post(f"{aws}/moto-api/reset", timeout=5)
    aws_clients.reset()
    provision()
    settings.FACTORY_API_URL = factory_url

    assert reorder_overdue() == SweepReport()  # backing off
    make_due(request)
    assert reorder_overdue() == SweepReport(placed=[request.pk])

    assert placed(simulator) == ["CP-502101"]
    request.refresh_from_db()
    assert request.status == RestockRequest.Status.REQUESTED
    assert consume_all() == {}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"failure_rate": 1.0}, "factory refused: 500"),
        ("closed", "factory unreachable"),
        ({"latency": 1.0}, "factory timed out"),
    ],
)
def test_the_request_says_what_the_factory_did(product, make_simulator, settings, answer, error):
    settings.FACTORY_READ_TIMEOUT = 0.3
    if answer == "closed":
        settings.FACTORY_API_URL = CLOSED_URL
    else:
        settings.FACTORY_API_URL = make_simulator(delay=60, **answer).url
    request = _pending(product)

    assert reorder_overdue() == SweepReport(refused=[request.pk])

    request.refresh_from_db()
    assert request.last_error == error
    assert request.get_status_display() == "Waiting for the factory"
    assert request.next_attempt_at > timezone.now()


def test_a_refused_order_is_retried_with_backoff_then_fails_for_staff(
    aws, product, make_simulator, settings, caplog
):
    settings.FACTORY_MAX_REORDERS = 5
    settings.FACTORY_RETRY_BACKOFF = 30
    settings.FACTORY_RETRY_BACKOFF_MAX = 100
    refusing = make_simulator(delay=60, failure_rate=1.0)
    settings.FACTORY_API_URL = refusing.url
    deplete(product)
    started = timezone.now()
    assert consume_restock(wait=0).outcomes == {"retry": 1, "absorbed": 1}
    request = RestockRequest.objects.get()
    assert request.last_error == "factory refused: 500"
    waits = [round((request.next_attempt_at - started).total_seconds())]

    for _ in range(4):
        assert reorder_overdue() == SweepReport()  # not due: the factory is not called
        make_due(request)
        started = timezone.now()
        assert reorder_overdue() == SweepReport(refused=[request.pk])
        request.refresh_from_db()
        waits.append(round((request.next_attempt_at - started).total_seconds()))
    assert waits == [30, 60, 100, 100, 100]
    assert request.status == RestockRequest.Status.PENDING
    assert len(refusing.received) == 5

    make_due(request)
    with caplog.at_level(logging.ERROR, logger="factory_bridge.services.restock"):
        assert reorder_overdue() == SweepReport(refused=[request.pk], failed=[request.pk])

    request.refresh_from_db()
    assert request.status == RestockRequest.Status.FAILED
    assert request.next_attempt_at is None
    assert (request.attempts, request.reorders) == (6, 5)
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"restock={request.pk} sku=CP-502101 depletion={request.depletion_key}" in error
    assert "factory refused: 500" in error
    product.refresh_from_db()
    assert product.depleted_at is None
    assert reorder_overdue() == SweepReport()
    assert len(refusing.received) == 6


def test_a_request_being_ordered_is_not_ordered_again_by_anyone(aws, product, simulator, settings):
    factory_url, settings.FACTORY_API_URL = settings.FACTORY_API_URL, CLOSED_URL
    deplete(product)
    message = reorder_message(aws)
    send(aws, "nudged-restock", message["Body"])
    consume_restock(wait=0)
    settings.FACTORY_API_URL = factory_url
    request = RestockRequest.objects.get()
    RestockRequest.objects.filter(pk=request.pk).update(
        next_attempt_at=timezone.now(), claimed_until=timezone.now() + timedelta(seconds=30)
    )

    assert reorder_overdue() == SweepReport()
    send(aws, "nudged-restock", message["Body"])
    assert consume_all() == {"in flight": 1}
    assert simulator.received == []

    # A claim that outlived its call belongs to a caller that died.
    RestockRequest.objects.filter(pk=request.pk).update(claimed_until=timezone.now())
    assert reorder_overdue() == SweepReport(placed=[request.pk])
    assert len(simulator.received) == 1


def test_a_failed_restock_whose_depletion_is_redriven_starts_over(
    aws, product, simulator, settings
):
    settings.FACTORY_MAX_REORDERS = 1
    factory_url, settings.FACTORY_API_URL = settings.FACTORY_API_URL, CLOSED_URL
    deplete(product)
    message = reorder_message(aws)
    send(aws, "nudged-restock", message["Body"])
    consume_restock(wait=0)
    request = RestockRequest.objects.get()
    make_due(request)
    assert reorder_overdue().failed == [request.pk]
    product.refresh_from_db()
    assert product.on_order == 0  # given up: the policy may order those units again

    settings.FACTORY_API_URL = factory_url
    send(aws, "nudged-restock", message["Body"])
    assert consume_all() == {"ordered": 1}
    product.refresh_from_db()
    assert product.on_order == request.quantity

    request.refresh_from_db()
    assert request.status == RestockRequest.Status.REQUESTED
    assert request.reorders == 0
    assert len(simulator.received) == 1


@pytest.mark.django_db(transaction=True)
def test_the_consumer_and_the_sweep_order_a_refused_restock_once(aws, product, settings):
    settings.FACTORY_API_URL = CLOSED_URL
    deplete(product)
    message = reorder_message(aws)
    send(aws, "nudged-restock", message["Body"])
    consume_restock(wait=0)
    send(aws, "nudged-restock", message["Body"])
    make_due(RestockRequest.objects.get())
    start = threading.Barrier(2)

    def run(job: Callable[[], object]) -> None:
        try:
            start.wait(timeout=10)
            job()
        finally:
            connection.close()

    with FactorySimulator(port=0, delay=60, latency=1.0) as slow_factory:
        settings.FACTORY_API_URL = slow_factory.url
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(run, [lambda: consume_restock(wait=1), reorder_overdue]))

        assert len(slow_factory.received) == 1
    assert RestockRequest.objects.get().status == RestockRequest.Status.REQUESTED


def test_an_overdue_request_is_ordered_again_exactly_once(
    product, second_product, simulator, settings
):
    overdue = timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60)
    late = _requested(product, age=overdue, key="depletion-late")
    recent = _requested(second_product, age=timedelta(seconds=10), key="depletion-recent")

    [reorder_id] = reorder_overdue().reordered

    late.refresh_from_db()
    reorder = RestockRequest.objects.get(pk=reorder_id)
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
    # Tokens carry their signing time: compare what they name, not their text.
    token = job["body"]["CallbackUrl"].rstrip("/").rsplit("/", 1)[-1]
    assert callback_restock_id(token=token) == reorder.pk
    assert job["body"]["IdempotencyKey"] == f"depletion-late/reorder-{late.pk}"

    assert reorder_overdue() == SweepReport()
    assert len(simulator.received) == 1


def test_a_reorder_the_factory_refused_is_placed_by_the_next_sweep(product, simulator, settings):
    _requested(
        product,
        age=timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60),
        key="depletion-late",
    )
    factory_url, settings.FACTORY_API_URL = settings.FACTORY_API_URL, CLOSED_URL

    [reorder_id] = reorder_overdue().reordered

    reorder = RestockRequest.objects.get(pk=reorder_id)
    assert reorder.status == RestockRequest.Status.PENDING
    assert reorder.last_error == "factory unreachable"

    settings.FACTORY_API_URL = factory_url
    make_due(reorder)
    assert reorder_overdue().placed == [reorder.pk]
    assert reorder_overdue() == SweepReport()

    reorder.refresh_from_db()
    assert reorder.status == RestockRequest.Status.REQUESTED
    assert len(simulator.received) == 1


def test_re_orders_end_at_the_cap_and_the_restock_fails_for_staff(
    product, simulator, settings, caplog
):
    settings.FACTORY_MAX_REORDERS = 3
    overdue = timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 60)
    first = _requested(product, age=overdue, key=str(uuid.uuid4()))
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())

    for _ in range(3):
        RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED).update(
            requested_at=timezone.now() - overdue
        )
        assert len(reorder_overdue().reordered) == 1
    [last] = RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED)
    RestockRequest.objects.filter(pk=last.pk).update(requested_at=timezone.now() - overdue)

    with caplog.at_level(logging.ERROR, logger="factory_bridge.services.restock"):
        report = reorder_overdue()

    assert report == SweepReport(failed=[last.pk])
    assert len(simulator.received) == 3
    assert RestockRequest.objects.filter(status=RestockRequest.Status.OVERDUE).count() == 3
    last.refresh_from_db()
    assert last.status == RestockRequest.Status.FAILED
    assert last.get_status_display() == "Failed: needs staff"
    assert last.reorders == 3
    assert last.next_attempt_at is None
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"restock={last.pk} sku=CP-502101 depletion={first.depletion_key}/reorder-" in (
        error.getMessage()
    )
    assert reorder_overdue() == SweepReport()

    # Nothing is on its way, and the product does not stay sold out silently: the next
    # order that finds it empty is a new depletion, ordered from the factory again.
    product.refresh_from_db()
    assert product.depleted_at is None
    with pytest.raises(OutOfStock):
        place_order(sku=product.sku, quantity=1)
    assert OutboxEvent.objects.filter(event_type="stock.depleted").count() == 1


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
            return len(reorder_overdue().reordered)
        finally:
            connection.close()

    with FactorySimulator(port=0, delay=60, latency=1.0) as slow_factory:
        settings.FACTORY_API_URL = slow_factory.url
        with ThreadPoolExecutor(max_workers=2) as pool:
            reorders = sum(pool.map(sweep, range(2)))

        assert reorders == 1
        assert len(slow_factory.received) == 1


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
