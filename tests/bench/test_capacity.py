"""bench/capacity.py's core: it counts the orders it placed, and sells no more than the stock."""

import pytest

from bench.capacity import run
from inventory.models import Product
from shop.models import Order


@pytest.mark.django_db(transaction=True)
def test_two_connections_count_their_orders_and_never_oversell(factory):
    Product.objects.create(sku="CP-1", name="A", price=100, stock=40, factory=factory)
    Product.objects.create(sku="CP-2", name="B", price=100, stock=1_000_000, factory=factory)

    # One connection per product: CP-1 runs short in the moment, and is refused from then on.
    # The one-round-trip order never takes the last unit: a depletion is the full path's.
    result = run(skus=["CP-1", "CP-2"], connections=2, seconds=1)

    assert result["orders_per_s"] > 0
    assert result["refused"] > 0
    assert result["placed"] == Order.objects.count()
    sold_out, plenty = Product.objects.get(sku="CP-1"), Product.objects.get(sku="CP-2")
    assert (sold_out.stock, sold_out.units_sold) == (1, 39)
    assert Order.objects.filter(product=sold_out).count() == 39
    taken = 1_000_000 - plenty.stock
    assert taken == plenty.units_sold == Order.objects.filter(product=plenty).count() > 0
    assert set(Order.objects.values_list("status", "quantity")) == {("completed", 1)}
