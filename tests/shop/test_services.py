"""place_order: take stock or refuse, and always record what happened."""

import pytest
from django.db import IntegrityError, transaction

from inventory.exceptions import UnknownSku
from inventory.models import Product
from shop.exceptions import OutOfStock
from shop.models import Order
from shop.services import place_order

pytestmark = pytest.mark.usefixtures("no_events")


def test_place_order_completes_and_takes_stock(product):
    result = place_order(sku="CP-502101", quantity=2)

    product.refresh_from_db()
    assert product.stock == 1
    assert result.remaining_stock == 1
    order = Order.objects.get()
    assert (result.order_id, result.reference, result.status) == (
        order.pk,
        order.reference,
        order.status,
    )
    assert order.product == product
    assert order.quantity == 2
    assert order.status == Order.Status.COMPLETED
    assert order.channel == Order.Channel.API
    assert order.remaining_stock == 1


def test_place_order_returns_remaining_stock_after_each_order(product):
    remaining = [place_order(sku="CP-502101", quantity=1).remaining_stock for _ in range(3)]

    assert remaining == [2, 1, 0]
    assert Order.objects.filter(status=Order.Status.COMPLETED).count() == 3


def test_place_order_records_the_channel(product):
    result = place_order(sku="CP-502101", quantity=1, channel=Order.Channel.WEB)

    assert Order.objects.get(pk=result.order_id).channel == Order.Channel.WEB


def test_place_order_taking_the_last_unit_opens_a_depletion(product):
    place_order(sku="CP-502101", quantity=3)

    product.refresh_from_db()
    assert product.stock == 0
    assert product.depleted_at is not None


def test_place_order_larger_than_stock_is_refused_and_counted(product):
    with pytest.raises(OutOfStock) as refused:
        place_order(sku="CP-502101", quantity=4)

    assert (refused.value.available, refused.value.requested) == (3, 4)
    assert refused.value.code == "out_of_stock"
    assert refused.value.name == "부산도너츠"
    product.refresh_from_db()
    assert product.stock == 3
    # No row per refusal: the product counts them for the demand estimate.
    assert not Order.objects.exists()
    assert (product.orders_refused, product.units_refused, product.units_sold) == (1, 4, 0)


def test_place_order_on_empty_stock_is_refused(product):
    Product.objects.filter(pk=product.pk).update(stock=0)

    with pytest.raises(OutOfStock) as refused:
        place_order(sku="CP-502101", quantity=1)

    assert refused.value.available == 0
    assert not Order.objects.exists()


def test_place_order_unknown_sku(product):
    with pytest.raises(UnknownSku) as unknown:
        place_order(sku="NO-SUCH-SKU", quantity=1)

    assert unknown.value.sku == "NO-SUCH-SKU"
    assert unknown.value.code == "unknown_sku"
    assert not Order.objects.exists()


def test_place_order_at_max_quantity_is_allowed(product, settings):
    Product.objects.filter(pk=product.pk).update(stock=settings.ORDER_MAX_QUANTITY)

    result = place_order(sku="CP-502101", quantity=settings.ORDER_MAX_QUANTITY)

    assert result.remaining_stock == 0


def test_database_refuses_negative_stock(product):
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=-1)

    product.refresh_from_db()
    assert product.stock == 3
