"""Stock writes: what orders take, the demo catalog and physical counts."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inventory.exceptions import InvalidNote, InvalidQuantity, UnknownSku
from inventory.models import Factory, Product, StockAdjustment
from inventory.services import (
    StockState,
    end_depletion,
    load_catalog,
    receive_stock,
    set_stock,
    take_stock,
)

pytestmark = pytest.mark.usefixtures("no_events")


def test_load_catalog_creates_the_seed_product(db):
    created, kept = load_catalog()

    assert created == Product.objects.count() > 0
    assert kept == 0
    donut = Product.objects.select_related("factory").get(sku="CP-502101")
    assert donut.name == "부산도너츠"
    assert donut.price == 19900
    assert donut.stock == 3
    assert donut.depleted_at is None
    assert donut.factory.code == "FF-500293"
    assert donut.factory.manager_email == "dob_factory@codeatates.com"


def test_load_catalog_is_idempotent(db):
    first = load_catalog()
    counts = (Factory.objects.count(), Product.objects.count())

    second = load_catalog()

    assert (Factory.objects.count(), Product.objects.count()) == counts
    assert second == (0, first[0])


def test_load_catalog_leaves_existing_products_alone(db):
    load_catalog()
    Product.objects.filter(sku="CP-502101").update(stock=42, price=20000)

    load_catalog()

    donut = Product.objects.get(sku="CP-502101")
    assert (donut.stock, donut.price) == (42, 20000)


def test_load_catalog_reuses_an_existing_factory(factory):
    load_catalog()

    assert Factory.objects.filter(code="FF-500293").count() == 1
    assert Product.objects.get(sku="CP-502101").factory == factory


def test_set_stock_records_an_adjustment(product):
    adjustment = set_stock(sku="CP-502101", quantity=7, note="Monday count")

    product.refresh_from_db()
    assert product.stock == 7
    assert adjustment == StockAdjustment.objects.get()
    assert adjustment.product == product
    assert adjustment.reason == StockAdjustment.Reason.COUNT
    assert (adjustment.old_quantity, adjustment.new_quantity) == (3, 7)
    assert adjustment.note == "Monday count"


def test_set_stock_to_zero(product):
    set_stock(sku="CP-502101", quantity=0)

    product.refresh_from_db()
    assert product.stock == 0
    assert StockAdjustment.objects.get().new_quantity == 0


def test_set_stock_unknown_sku(product):
    with pytest.raises(UnknownSku):
        set_stock(sku="NOPE-1", quantity=7)

    assert not StockAdjustment.objects.exists()


def test_set_stock_negative(product):
    with pytest.raises(InvalidQuantity):
        set_stock(sku="CP-502101", quantity=-1)

    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


def test_set_stock_refuses_a_note_longer_than_the_audit_keeps(product):
    with pytest.raises(InvalidNote) as invalid:
        set_stock(sku="CP-502101", quantity=7, note="x" * 201)

    assert invalid.value.detail == "The note is 201 characters long; at most 200 are kept."
    assert (invalid.value.length, invalid.value.longest) == (201, 200)
    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


def test_set_stock_keeps_a_note_of_the_longest_length(product):
    set_stock(sku="CP-502101", quantity=7, note="x" * 200)

    assert StockAdjustment.objects.get().note == "x" * 200


def _updated_long_ago(product: Product) -> datetime:
    long_ago = timezone.now() - timedelta(days=1)
    Product.objects.filter(pk=product.pk).update(updated_at=long_ago)
    return long_ago


def test_taking_stock_moves_updated_at_in_the_same_statement(db, product):
    long_ago = _updated_long_ago(product)

    with CaptureQueriesContext(connection) as queries:
        take_stock(sku="CP-502101", quantity=1)

    assert len(queries) == 1
    product.refresh_from_db()
    assert product.stock == 2
    assert product.updated_at > long_ago + timedelta(hours=23)


def test_a_refused_order_leaves_updated_at_alone(db, product):
    Product.objects.filter(pk=product.pk).update(stock=0)
    long_ago = _updated_long_ago(product)

    take_stock(sku="CP-502101", quantity=1)

    product.refresh_from_db()
    assert product.updated_at == long_ago


def test_an_arrival_moves_updated_at(db, product):
    long_ago = _updated_long_ago(product)

    receive_stock(product_id=product.pk, quantity=10, note="arrival")

    product.refresh_from_db()
    assert product.stock == 13
    assert product.updated_at > long_ago + timedelta(hours=23)


def test_a_count_moves_updated_at(db, product):
    long_ago = _updated_long_ago(product)

    set_stock(sku="CP-502101", quantity=5)

    product.refresh_from_db()
    assert product.updated_at > long_ago + timedelta(hours=23)


def test_set_stock_above_zero_ends_the_depletion(product):
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())

    set_stock(sku="CP-502101", quantity=5)

    product.refresh_from_db()
    assert product.stock == 5
    assert product.depleted_at is None


def test_set_stock_to_zero_keeps_the_depletion(product):
    depleted_at = timezone.now().replace(microsecond=0)
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=depleted_at)

    set_stock(sku="CP-502101", quantity=0)

    product.refresh_from_db()
    assert product.depleted_at == depleted_at


def test_take_stock_takes_units_and_reads_the_state_back(db, product):
    outcome = take_stock(sku="CP-502101", quantity=2)

    assert outcome.taken is True
    assert (outcome.depleted, outcome.decision) == (False, None)
    assert outcome.state == StockState(
        product_id=product.pk,
        sku="CP-502101",
        name="부산도너츠",
        remaining=1,
        depleted=False,
        restock_quantity=product.restock_quantity,
        factory_code="FF-500293",
        factory_id=product.factory_id,
        mode=Product.Mode.ADAPTIVE,
        on_order=0,
        demand_rate=0.0,
        reorder_point=0,
        min_order_quantity=10,
        max_order_quantity=500,
        price=19900,
        ceiling=2000,
    )
    product.refresh_from_db()
    assert (product.stock, product.units_sold, product.orders_refused) == (1, 2, 0)


def test_take_stock_refuses_more_than_on_hand_and_changes_nothing(db, product):
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())

    Product.objects.filter(pk=product.pk).update(on_order=10)

    outcome = take_stock(sku="CP-502101", quantity=1)

    assert outcome.taken is False
    assert (outcome.state.remaining, outcome.state.depleted) == (0, True)
    assert (outcome.depleted, outcome.decision) == (False, None)
    product.refresh_from_db()
    assert product.stock == 0
    assert (product.units_sold, product.orders_refused, product.units_refused) == (0, 1, 1)


def test_take_stock_answers_with_the_stored_sku(db, product):
    # MySQL compares SKUs case-insensitively; what is reported is the SKU as stored.
    outcome = take_stock(sku="cp-502101", quantity=1)

    assert outcome.state.sku == "CP-502101"


def test_take_stock_of_an_unknown_sku_raises(db, product):
    with pytest.raises(UnknownSku):
        take_stock(sku="CP-000000", quantity=1)

    product.refresh_from_db()
    assert product.stock == 3


def test_end_depletion_lets_the_next_empty_order_open_a_new_one(product):
    product.depleted_at = timezone.now()
    product.save()

    assert end_depletion(product_id=product.pk) is True
    assert end_depletion(product_id=product.pk) is False

    product.refresh_from_db()
    assert product.depleted_at is None
    Product.objects.filter(pk=product.pk).update(stock=1)
    assert take_stock(sku="CP-502101", quantity=1).depleted is True


@pytest.mark.django_db
def test_quiet_take_takes_exactly_when_the_policy_calls_for_nothing_else(product):
    """quiet_take's UPDATE settles an order alone only when take_stock would open no depletion
    and decide no reorder: its SQL and policy.needs_order agree on every state of a grid."""
    from itertools import product as grid

    from django.db import connection, transaction

    from inventory import policy
    from inventory.services import quiet_take

    modes = (Product.Mode.ADAPTIVE, Product.Mode.AT_ZERO)
    for mode, stock, on_order, promised, point, quantity in grid(
        modes, (0, 1, 2, 5), (0, 3), (0, 2), (0, 3, 6), (1, 2)
    ):
        if promised > on_order:
            continue  # no such product (product_promised_on_order)
        Product.objects.filter(pk=product.pk).update(
            replenishment_mode=mode,
            stock=stock,
            on_order=on_order,
            promised=promised,
            reorder_point=point,
        )
        with transaction.atomic(), connection.cursor() as cursor:
            sql, params = quiet_take(sku=product.sku, quantity=quantity)
            cursor.execute(sql, params)
            taken = cursor.rowcount == 1
            transaction.set_rollback(True)
        after = policy.Stock(
            mode=mode,
            on_hand=stock - quantity,
            on_order=on_order,
            rate=0.0,
            reorder_point=point,
            review=60,
            restock_quantity=1,
            min_quantity=1,
            max_quantity=1,
            promised=promised,
        )
        quiet = stock - quantity > 0 and not policy.needs_order(after)
        assert taken == quiet, (mode, stock, on_order, promised, point, quantity)
