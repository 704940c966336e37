"""The overdue sweep against moto and the factory simulator: what the factory refused or never
called back for is ordered again, once, up to the cap; then the restock fails for staff.

Plain `db` tests unless they race two callers: events are relayed by calling relay_outbox().
"""

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.utils import timezone

from factory_bridge import aws as aws_clients
from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.callback import callback_restock_id
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.services.restock.sweep import SweepReport, reorder_overdue
from factory_bridge.tools.provisioning import provision
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from nudged.core.models import OutboxEvent
from shop.exceptions import OutOfStock
from shop.services import place_order
from tests.factory_bridge.test_restock import (
    CLOSED_URL,
    consume_all,
    deplete,
    messages_in,
    placed,
    reorder_message,
    send,
)

pytestmark = pytest.mark.django_db


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
    with caplog.at_level(logging.ERROR, logger="factory_bridge.services.restock.abandon"):
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

    with caplog.at_level(logging.ERROR, logger="factory_bridge.services.restock.abandon"):
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
