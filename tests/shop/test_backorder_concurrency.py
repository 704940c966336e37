"""Pre-orders and arrivals at once against real MariaDB: no unit promised or served twice."""

import random
import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from inventory.models import Product, Promise, ReorderDecision
from inventory.services import receive_stock
from shop.exceptions import OutOfStock
from shop.models import Order
from shop.services import place_order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_events")]

SKU = "CP-502101"
BUYERS = 40


def _race(jobs: list[Callable[[], object]]) -> list[object]:
    """Release one thread per job at the same instant; each hands back its result or error."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = []

    def run(job: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            results.append(job())
        except Exception as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results


def _backorder(quantity: int) -> Callable[[], object]:
    def job() -> object:
        try:
            return place_order(sku=SKU, quantity=quantity, backorder=True).order_id
        except OutOfStock:
            return "refused"

    return job


def _arrival(batch: ReorderDecision) -> Callable[[], object]:
    def job() -> object:
        with transaction.atomic():
            receive_stock(
                product_id=batch.product_id, quantity=batch.quantity, note="", batch_id=batch.pk
            )
        return "arrived"

    return job


def test_two_arrivals_and_many_pre_orders_at_once_promise_no_unit_twice(product):
    Product.objects.filter(pk=product.pk).update(
        stock=0, min_order_quantity=10, max_order_quantity=10, reorder_ceiling=60
    )
    # Two batches in production, partly promised, land while buyers pre-order.
    place_order(sku=SKU, quantity=6, backorder=True)
    place_order(sku=SKU, quantity=6, backorder=True)
    first, second = ReorderDecision.objects.order_by("pk")
    quantities = [random.Random(20 + i).randint(1, 3) for i in range(BUYERS)]

    results = _race([_backorder(q) for q in quantities] + [_arrival(first), _arrival(second)])

    assert [r for r in results if isinstance(r, Exception)] == []
    assert results.count("arrived") == 2
    taken = [r for r in results if isinstance(r, int)]
    orders = Order.objects.filter(product=product)
    assert orders.count() == len(taken) + 2
    product.refresh_from_db()
    waiting = Promise.objects.filter(state=Promise.State.WAITING)
    kept = Promise.objects.filter(state=Promise.State.KEPT)
    units = lambda promises: promises.aggregate(n=Sum("quantity"))["n"] or 0  # noqa: E731
    # Pre-orders placed once units reached the shelf are ordinary sales.
    shelf = orders.filter(promise__isnull=True)
    assert set(shelf.values_list("status", flat=True)) <= {Order.Status.COMPLETED}
    sold = shelf.aggregate(n=Sum("quantity"))["n"] or 0
    # Every unit that arrived is on the shelf or in the hands of exactly one order.
    assert product.stock + units(kept) + sold == first.quantity + second.quantity
    assert product.promised == units(waiting) <= product.on_order
    for batch in ReorderDecision.objects.all():
        assert batch.promised == units(waiting.filter(batch=batch)) <= batch.quantity
        if batch.settled_at is not None:
            assert batch.promised == 0
    on_order = ReorderDecision.objects.filter(settled_at__isnull=True)
    assert product.on_order == on_order.aggregate(n=Sum("quantity"))["n"]
    # Each order is where its promise says: served, or waiting.
    for status, state in [
        (Order.Status.COMPLETED, Promise.State.KEPT),
        (Order.Status.BACKORDERED, Promise.State.WAITING),
    ]:
        promised = orders.filter(status=status, promise__isnull=False)
        assert set(promised.values_list("promise_id", flat=True)) == set(
            Promise.objects.filter(state=state).values_list("pk", flat=True)
        )


def test_many_pre_orders_for_the_last_units_in_production_take_each_once(product):
    Product.objects.filter(pk=product.pk).update(
        stock=0, min_order_quantity=10, max_order_quantity=10, reorder_ceiling=20
    )
    place_order(sku=SKU, quantity=6, backorder=True)
    place_order(sku=SKU, quantity=6, backorder=True)

    # 8 units left unpromised in two batches, and the ceiling allows no third.
    results = _race([_backorder(1) for _ in range(BUYERS)])

    assert [r for r in results if isinstance(r, Exception)] == []
    assert results.count("refused") == BUYERS - 8
    assert [b.promised for b in ReorderDecision.objects.order_by("pk")] == [10, 10]
    product.refresh_from_db()
    assert (product.on_order, product.promised) == (20, 20)
