"""A factory that answers late or fails for a while, over real HTTP: restocked once, measured
by its production time alone."""

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from factory_bridge.models import RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.services.restock.sweep import reorder_overdue
from inventory.models import Factory, Product, ReorderDecision, StockAdjustment
from shop.services import place_order

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_until(condition: Callable[[], Any], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sell_out(product: Product) -> None:
    """Sell the last units: the sale decides a reorder and its events go out."""
    place_order(sku=product.sku, quantity=product.stock)
    relay_outbox()


def consume_all() -> dict[str, int]:
    total: dict[str, int] = {}
    while outcomes := consume_restock(wait=0).outcomes:
        for outcome, count in outcomes.items():
            total[outcome] = total.get(outcome, 0) + count
    return total


@pytest.fixture
def sweep() -> Iterator[threading.Event]:
    """The overdue sweep, every 0.2 s in a thread, as the cluster schedules it (each minute)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.wait(0.2):
                reorder_overdue()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="overdue-sweep", daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(timeout=30)
    assert errors == []


def test_a_callback_before_the_factorys_answer_fulfils_the_restock_once(
    live_server, aws, product, make_simulator, settings, sweep
):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.FACTORY_CALLBACK_TIMEOUT = 1
    # Calls back after 0.2 s, answers 201 after 1.5 s.
    factory = make_simulator(delay=0.2, answer_delay=1.5)
    settings.FACTORY_API_URL = factory.url
    sell_out(product)

    assert consume_all() == {"ordered": 1, "absorbed": 1}
    [job] = factory.received
    assert job["callback_status"] == "delivered"  # before the 201 the consumer waited for
    time.sleep(2 * settings.FACTORY_CALLBACK_TIMEOUT)  # the sweep would find it overdue
    sweep.set()

    assert len(factory.received) == 1
    restock = RestockRequest.objects.get()
    assert restock.status == RestockRequest.Status.FULFILLED
    assert restock.factory_job_id == job["id"]
    product.refresh_from_db()
    assert (product.stock, product.on_order) == (product.restock_quantity, 0)
    assert StockAdjustment.objects.filter(reason=StockAdjustment.Reason.ARRIVAL).count() == 1


def test_a_factory_that_failed_for_minutes_is_measured_by_its_production_time(
    live_server, aws, product, factory, make_simulator, settings
):
    Factory.objects.filter(pk=factory.pk).update(lead_time=0.5, lead_time_samples=[0.5] * 3)
    settings.PUBLIC_BASE_URL = live_server.url
    settings.FACTORY_API_URL = make_simulator(failure_rate=1.0).url
    sell_out(product)
    assert consume_all() == {"retry": 1, "absorbed": 1}
    # Four minutes of refusals and back-off, as if they had gone by.
    four_minutes_ago = timezone.now() - timedelta(minutes=4)
    ReorderDecision.objects.update(created_at=four_minutes_ago)
    RestockRequest.objects.update(created_at=four_minutes_ago, next_attempt_at=timezone.now())
    settings.FACTORY_API_URL = make_simulator(delay=0.5).url

    [restock] = reorder_overdue().placed
    wait_until(
        lambda: RestockRequest.objects.filter(
            pk=restock, status=RestockRequest.Status.FULFILLED
        ).exists(),
        seconds=10,
        what="the recovered factory's callback",
    )

    factory.refresh_from_db()
    measured = factory.lead_time_samples[-1]
    print(f"\nmeasured {measured:.2f} s; estimate {factory.lead_time:.2f} s (production 0.5 s)")
    assert 0.4 <= measured < 2.0
    assert factory.lead_time < 2.0
