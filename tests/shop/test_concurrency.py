"""Many buyers at once against real MySQL: stock is never oversold and never negative."""

import random
import threading
from dataclasses import dataclass

import pytest
from django.db import connection
from django.db.models import Min, Sum

from inventory.models import Product
from shop.exceptions import OutOfStock, PurchaseLimitReached
from shop.models import Order
from shop.services import place_order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_events")]

BUYERS = 50
SKU = "CP-502101"


@dataclass(frozen=True)
class Outcome:
    quantity: int
    status: str
    stock: int | None = None
    error: str = ""


def _race(quantities: list[int]) -> list[Outcome]:
    """Release one thread per quantity at the same instant, each placing one order."""
    barrier = threading.Barrier(len(quantities))
    outcomes: list[Outcome] = []

    def buy(quantity: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            try:
                result = place_order(sku=SKU, quantity=quantity)
            except OutOfStock as refused:
                outcomes.append(Outcome(quantity, "rejected", refused.available))
            else:
                outcomes.append(Outcome(quantity, "completed", result.remaining_stock))
        except Exception as exc:
            outcomes.append(Outcome(quantity, "error", error=repr(exc)))
        finally:
            connection.close()

    threads = [threading.Thread(target=buy, args=(quantity,)) for quantity in quantities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a buyer thread hung"
    return outcomes


def _stock_of(product: Product) -> int:
    product.refresh_from_db(fields=["stock"])
    return product.stock


def test_fifty_buyers_ten_donuts_exactly_ten_orders_complete(product):
    Product.objects.filter(pk=product.pk).update(stock=10)

    outcomes = _race([1] * BUYERS)

    assert [o.error for o in outcomes if o.status == "error"] == []
    assert len(outcomes) == BUYERS
    completed = [o for o in outcomes if o.status == "completed"]
    rejected = [o for o in outcomes if o.status == "rejected"]
    assert len(completed) == 10
    assert len(rejected) == BUYERS - 10
    assert all(o.stock == 0 for o in rejected)
    # Each completed order saw a different remaining stock: 9, 8, ..., 0.
    assert sorted(o.stock for o in completed) == list(range(10))
    assert _stock_of(product) == 0

    orders = Order.objects.filter(product=product)
    assert orders.filter(status=Order.Status.COMPLETED).count() == 10
    assert orders.count() == 10
    product.refresh_from_db()
    assert (product.orders_refused, product.units_refused) == (BUYERS - 10, BUYERS - 10)
    assert product.units_sold == 10
    assert orders.aggregate(low=Min("remaining_stock"))["low"] >= 0
    assert Product.objects.aggregate(low=Min("stock"))["low"] >= 0


def test_mixed_quantities_never_oversell(product):
    initial = 10
    Product.objects.filter(pk=product.pk).update(stock=initial)
    quantities = [random.Random(502101 + i).randint(1, 3) for i in range(BUYERS)]

    outcomes = _race(quantities)

    assert [o.error for o in outcomes if o.status == "error"] == []
    assert len(outcomes) == BUYERS
    final = _stock_of(product)
    assert final >= 0
    sold = sum(o.quantity for o in outcomes if o.status == "completed")
    assert sold == initial - final
    # A refusal only happens when the stock really was short for that order.
    assert all(o.stock < o.quantity for o in outcomes if o.status == "rejected")

    orders = Order.objects.filter(product=product)
    refused = [o for o in outcomes if o.status == "rejected"]
    assert orders.count() == BUYERS - len(refused)
    product.refresh_from_db()
    assert product.orders_refused == len(refused)
    assert product.units_refused == sum(o.quantity for o in refused)
    assert product.units_sold == sold
    completed = orders.filter(status=Order.Status.COMPLETED)
    assert completed.aggregate(total=Sum("quantity"))["total"] == sold
    assert orders.aggregate(low=Min("remaining_stock"))["low"] >= 0
    # Completed orders are written while the row is locked, so in id order they form a chain.
    stock = initial
    for quantity, remaining in completed.order_by("id").values_list("quantity", "remaining_stock"):
        stock -= quantity
        assert remaining == stock
    assert stock == final


@pytest.mark.parametrize(
    ("stock", "quantity"),
    [
        pytest.param(0, 1, id="sold-out-never-depleted"),
        pytest.param(2, 3, id="short-by-one"),
    ],
)
def test_concurrent_refusals_are_all_counted(product, stock, quantity):
    # Stock that was never depleted by an order, as load_catalog or set_stock leave it.
    Product.objects.filter(pk=product.pk).update(stock=stock, depleted_at=None)

    outcomes = _race([quantity] * BUYERS)

    assert [o.error for o in outcomes if o.status == "error"] == []
    assert [o.status for o in outcomes] == ["rejected"] * BUYERS
    assert not Order.objects.exists()
    product.refresh_from_db()
    assert (product.orders_refused, product.units_refused) == (BUYERS, BUYERS * quantity)
    assert product.stock == stock


def test_one_address_through_two_channels_at_once_never_passes_its_ceiling(product, settings):
    settings.PURCHASE_LIMIT = 3
    settings.PURCHASE_LIMIT_PER_ADDRESS = 5
    Product.objects.filter(pk=product.pk).update(stock=100)
    address = "a" * 32
    channels = [Order.Channel.API, Order.Channel.WEB] * 10
    barrier = threading.Barrier(len(channels))
    outcomes: list[str] = []

    def buy(number: int, channel: str) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            try:
                # Each storefront order a new session (fresh cookies); the API's is the address.
                customer = address if channel == Order.Channel.API else f"session-{number}"
                place_order(
                    sku=SKU, quantity=1, channel=channel, customer=customer, address=address
                )
            except PurchaseLimitReached as limited:
                outcomes.append(limited.scope)
            else:
                outcomes.append("completed")
        except Exception as exc:
            outcomes.append(repr(exc))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=buy, args=(number, channel))
        for number, channel in enumerate(channels)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads), "a buyer thread hung"
    assert set(outcomes) <= {"address", "completed", "customer"}, outcomes
    assert outcomes.count("completed") == 5
    assert Order.objects.filter(address=address).aggregate(units=Sum("quantity"))["units"] == 5
    assert Order.objects.filter(channel=Order.Channel.API).count() <= 3
    assert _stock_of(product) == 95
