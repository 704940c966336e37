"""Pre-orders through the factory: served by their batch's callback, cancelled when production
gives up, and a lost callback noticed within a few lead times."""

import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from factory_bridge.models import RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.services.restock.sweep import (
    CALLBACK_WAIT_FLOOR,
    callback_wait,
    reorder_overdue,
)
from inventory.models import Factory, Product, Promise, ReorderDecision
from nudged.core.models import OutboxEvent
from shop.models import Order
from shop.services import place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def empty(product: Product) -> Product:
    Product.objects.filter(pk=product.pk).update(
        stock=0, min_order_quantity=10, max_order_quantity=10
    )
    product.refresh_from_db()
    return product


def consume() -> None:
    while consume_restock(wait=0).outcomes:
        pass


def test_a_pre_order_is_served_by_its_batchs_callback(aws, empty, simulator, client: Client):
    order = Order.objects.get(pk=place_order(sku=empty.sku, quantity=3, backorder=True).order_id)
    relay_outbox()
    consume()
    [job] = simulator.received
    request = RestockRequest.objects.get()
    batch = ReorderDecision.objects.get()
    assert request.decision == batch
    # Accepted: due one lead time after the factory's 201.
    assert batch.due_at == request.requested_at + timedelta(seconds=empty.factory.lead_time)

    answer = client.post(
        urlsplit(job["body"]["CallbackUrl"]).path,
        json.dumps(job["body"]),
        content_type="application/json",
    )

    assert answer.status_code == 200
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED
    assert order.fulfilled_at is not None
    empty.refresh_from_db()
    assert (empty.stock, empty.on_order, empty.promised) == (7, 0, 0)
    kinds = OutboxEvent.objects.values_list("event_type", flat=True)
    assert {"order.backordered", "stock.low", "stock.replenished"} <= set(kinds)


def test_a_restock_given_up_after_its_re_orders_cancels_its_pre_orders(empty, simulator, settings):
    settings.FACTORY_MAX_REORDERS = 1
    settings.EVENTS_ENABLED = False
    order = Order.objects.get(pk=place_order(sku=empty.sku, quantity=2, backorder=True).order_id)
    batch = ReorderDecision.objects.get()
    overdue = timezone.now() - timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT + 1)
    RestockRequest.objects.create(
        product=empty,
        factory=empty.factory,
        quantity=batch.quantity,
        decision=batch,
        status=RestockRequest.Status.REQUESTED,
        depletion_key="depletion-1",
        requested_at=overdue,
    )
    # Lost: ordered again (the re-order names no decision: it orders the same batch).
    assert len(reorder_overdue().reordered) == 1
    RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED).update(
        requested_at=overdue
    )
    assert order.promise.state == Promise.State.WAITING

    assert len(reorder_overdue().failed) == 1

    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.promise.state == Promise.State.CANCELLED
    batch.refresh_from_db()
    assert (batch.promised, batch.settled_at is not None) == (0, True)
    empty.refresh_from_db()
    assert (empty.on_order, empty.promised) == (0, 0)


@pytest.mark.parametrize(
    ("lead_time", "wait"),
    [(40.0, 120.0), (10.0, CALLBACK_WAIT_FLOOR), (400.0, 600.0)],
)
def test_a_callback_is_lost_after_a_few_lead_times_within_the_floor_and_the_cap(
    settings, lead_time, wait
):
    settings.FACTORY_CALLBACK_LEAD_TIMES = 3
    settings.FACTORY_CALLBACK_TIMEOUT = 600

    assert callback_wait(lead_time) == wait


def test_the_sweep_reorders_a_restock_three_lead_times_late(
    factory: Factory, product, simulator, settings
):
    settings.FACTORY_CALLBACK_LEAD_TIMES = 3
    Factory.objects.filter(pk=factory.pk).update(lead_time=40.0)

    def requested(seconds_ago: float, key: str) -> RestockRequest:
        return RestockRequest.objects.create(
            product=product,
            factory=factory,
            quantity=10,
            status=RestockRequest.Status.REQUESTED,
            depletion_key=key,
            requested_at=timezone.now() - timedelta(seconds=seconds_ago),
        )

    late, recent = requested(125, "late"), requested(100, "recent")

    report = reorder_overdue()

    late.refresh_from_db()
    recent.refresh_from_db()
    assert late.status == RestockRequest.Status.OVERDUE
    assert recent.status == RestockRequest.Status.REQUESTED
    assert len(report.reordered) == 1
