"""The whole loop over real HTTP: order, SNS, SQS, the restock poller, the factory, its callback."""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.db import connection

from factory_bridge.models import RestockRequest
from factory_bridge.services.pollers import run_poller
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from nudged.core.models import OutboxEvent, WorkerLease
from tests.factory_bridge.sqs import drain, ops_events

pytestmark = pytest.mark.e2e

SKU = "CP-502101"


def wait_until(condition: Callable[[], Any], *, deadline: float, what: str) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def simulator(settings) -> Iterator[FactorySimulator]:
    with FactorySimulator(port=0, delay=1.0) as factory:
        settings.FACTORY_API_URL = factory.url
        yield factory


@pytest.fixture
def restock_poller(live_server) -> Iterator[Callable[[], None]]:
    """Run the restock poller in a thread until the returned `stop` is called (or teardown)."""

    def poll() -> None:
        try:
            run_poller(name="restock", seconds=60, handover=False)
        finally:
            connection.close()

    thread = threading.Thread(target=poll, name="restock-poller", daemon=True)
    thread.start()

    def stop() -> None:
        # Taking the lease makes the loop exit at its next beat, after at most one round.
        WorkerLease.objects.filter(name="restock").update(owner="stopped-by-test")
        thread.join(timeout=10)
        assert not thread.is_alive(), "the restock poller did not stop"

    yield stop
    if thread.is_alive():
        stop()


def buy(base_url: str, quantity: int) -> dict[str, Any]:
    response = requests.post(
        f"{base_url}/api/orders/", json={"sku": SKU, "quantity": quantity}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_sold_out_product_is_restocked_by_the_factory(
    live_server, aws, product: Product, simulator, restock_poller, settings
):
    settings.PUBLIC_BASE_URL = live_server.url

    ordered_at = time.monotonic()
    assert buy(live_server.url, 3)["remaining_stock"] == 0

    wait_until(lambda: simulator.received, deadline=ordered_at + 5, what="the factory order (5 s)")
    ordered_after = time.monotonic() - ordered_at
    [job] = simulator.received
    body = job["body"]
    assert body == {
        "MessageGroupId": "stock-arrival-group",
        "MessageAttributeProductId": SKU,
        "MessageAttributeProductCnt": str(product.restock_quantity),
        "MessageAttributeFactoryId": "FF-500293",
        "MessageAttributeRequester": settings.FACTORY_REQUESTER,
        "CallbackUrl": body["CallbackUrl"],
        # The reorder decided with the sale is what is ordered; its depletion is absorbed.
        "IdempotencyKey": str(OutboxEvent.objects.get(event_type="stock.low").pk),
    }
    assert all(isinstance(value, str) and value for value in body.values())
    assert body["CallbackUrl"].startswith(f"{live_server.url}/factory/callbacks/")

    wait_until(
        lambda: simulator.received[0]["callback_status"] != "pending",
        deadline=time.monotonic() + 10,
        what="the factory's callback",
    )
    assert simulator.received[0]["callback_status"] == "delivered"
    assert simulator.received[0]["callback_http_status"] == 200
    print(
        f"\nfactory order {ordered_after:.2f} s after the sale,"
        f" stock back {time.monotonic() - ordered_at:.2f} s after it (factory delay 1 s)"
    )
    product.refresh_from_db()
    assert product.stock == product.restock_quantity
    restock = RestockRequest.objects.get()
    assert restock.status == RestockRequest.Status.FULFILLED
    assert restock.decision == product.decisions.get()
    assert product.on_order == 0
    assert restock.factory_job_id == job["id"]

    assert buy(live_server.url, 1)["remaining_stock"] == product.restock_quantity - 1

    restock_poller()
    assert len(simulator.received) == 1
    ops = drain(aws, "nudged-ops")
    events = ops_events(ops)
    assert Counter(e["type"] for e in events) == {
        "order.completed": 2,
        "stock.depleted": 1,
        "stock.low": 1,
        "stock.replenished": 1,
    }
    [replenished] = [e for e in events if e["type"] == "stock.replenished"]
    assert replenished["sku"] == SKU
    assert replenished["quantity"] == product.restock_quantity
    assert replenished["restock_id"] == restock.pk
    assert drain(aws, "nudged-restock") == []


def test_a_burst_keeps_several_factory_orders_in_flight_and_stock_is_conserved(
    live_server, aws, product: Product, restock_poller, settings
):
    settings.PUBLIC_BASE_URL = live_server.url
    # As the estimates loop leaves it after measuring a rush: 5 units/s, point 30.
    Product.objects.filter(pk=product.pk).update(
        stock=20, demand_rate=5.0, reorder_point=30, min_order_quantity=5
    )
    with FactorySimulator(port=0, delay=3.0) as factory:
        settings.FACTORY_API_URL = factory.url
        sold = 0
        for _ in range(24):  # more than one factory order's worth, faster than it comes
            response = requests.post(
                f"{live_server.url}/api/orders/", json={"sku": SKU, "quantity": 1}, timeout=10
            )
            assert response.status_code in (201, 409), response.text
            sold += response.status_code == 201

        wait_until(
            lambda: len(factory.received) >= 2, deadline=time.monotonic() + 10, what="2 orders"
        )
        in_flight = [job for job in factory.received if job["callback_status"] == "pending"]
        assert len(in_flight) >= 2, "the factory should have had several orders at once"
        wait_until(
            lambda: (
                all(job["callback_status"] == "delivered" for job in factory.received)
                and not RestockRequest.objects.filter(
                    status=RestockRequest.Status.REQUESTED
                ).exists()
            ),
            deadline=time.monotonic() + 20,
            what="every callback",
        )
        restock_poller()

    decisions = list(product.decisions.order_by("id"))
    restocks = RestockRequest.objects.filter(product=product)
    assert len(factory.received) == len(decisions) == restocks.count() >= 2
    assert {r.decision_id for r in restocks} == {d.pk for d in decisions}
    arrived = sum(r.quantity for r in restocks.filter(status=RestockRequest.Status.FULFILLED))
    assert arrived == sum(d.quantity for d in decisions)
    product.refresh_from_db()
    assert product.stock == 20 + arrived - sold >= 0
    assert product.on_order == 0
    assert product.units_sold == sold


def test_a_pre_order_of_a_sold_out_donut_is_served_when_its_batch_lands(
    live_server, aws, product: Product, simulator, restock_poller, settings
):
    settings.PUBLIC_BASE_URL = live_server.url
    Product.objects.filter(pk=product.pk).update(stock=0)
    refused = requests.post(
        f"{live_server.url}/api/orders/", json={"sku": SKU, "quantity": 2}, timeout=10
    )
    assert refused.status_code == 409

    response = requests.post(
        f"{live_server.url}/api/orders/",
        json={"sku": SKU, "quantity": 2, "backorder": True},
        timeout=10,
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "backordered"
    receipt_url = f"{live_server.url}/api/orders/{order['reference']}/"
    assert requests.get(receipt_url, timeout=10).json()["ready_by"] == order["ready_by"]
    wait_until(
        lambda: requests.get(receipt_url, timeout=10).json()["status"] != "backordered",
        deadline=time.monotonic() + 15,
        what="the batch to serve the pre-order",
    )
    receipt = requests.get(receipt_url, timeout=10).json()
    assert receipt["status"] == "completed"
    assert receipt["fulfilled_at"] <= receipt["ready_by"]
    restock_poller()
    product.refresh_from_db()
    [restock] = RestockRequest.objects.all()
    assert product.stock == restock.quantity - 2
    assert (product.on_order, product.promised) == (0, 0)
    events = ops_events(drain(aws, "nudged-ops"))
    kinds = Counter(e["type"] for e in events)
    assert kinds["order.backordered"] == 1
    assert kinds["order.completed"] == 1
    [sale] = [e for e in events if e["type"] == "order.completed"]
    assert sale["status"] == "completed"
