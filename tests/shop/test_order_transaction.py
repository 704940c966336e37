"""An order outside any transaction runs in two round trips (inventory.services.begin_take):
START TRANSACTION with the UPDATE and the state, then the order's INSERT with COMMIT. Whatever
else an order sets off goes through transaction.atomic, and nothing is left half done."""

from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from inventory.models import Product
from shop import services
from shop.exceptions import OutOfStock, PurchaseLimitReached
from shop.models import Order
from shop.services import place_order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_events")]

SKU = "CP-502101"


@pytest.fixture
def stocked(product: Product) -> Product:
    product.stock = 20
    product.save(update_fields=["stock"])
    return product


def _in_transaction() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@in_transaction")
        return cursor.fetchone()[0] == 1


def _stock(product: Product) -> int:
    product.refresh_from_db(fields=["stock", "orders_limited", "depleted_at"])
    return product.stock


def test_an_order_takes_two_round_trips_and_commits(stocked):
    with CaptureQueriesContext(connection) as queries:
        result = place_order(sku=SKU, quantity=2, customer="c1", address="a1")

    sql = [query["sql"] for query in queries.captured_queries]
    assert len(sql) == 2
    assert sql[0].startswith("START TRANSACTION; UPDATE `inventory_product`")
    assert sql[1].startswith("INSERT INTO `shop_order`") and sql[1].endswith("; COMMIT")
    assert not _in_transaction()
    assert result.remaining_stock == 18 == _stock(stocked)
    order = Order.objects.get(pk=result.order_id)
    assert (order.quantity, order.customer, order.address) == (2, "c1", "a1")


def test_a_purchase_limit_reached_takes_nothing_and_ends_the_transaction(stocked, settings):
    settings.PURCHASE_LIMIT = 3
    place_order(sku=SKU, quantity=3, customer="c1", address="a1")

    with pytest.raises(PurchaseLimitReached) as limited:
        place_order(sku=SKU, quantity=1, customer="c1", address="a2")

    assert (limited.value.scope, limited.value.bought) == (PurchaseLimitReached.CUSTOMER, 3)
    assert not _in_transaction()
    assert _stock(stocked) == 17
    assert stocked.orders_limited == 1
    assert Order.objects.count() == 1


def test_a_failed_insert_rolls_the_units_back(stocked):
    values = ", ".join(["%s"] * services.ORDER_SQL.count("%s"))
    with (
        mock.patch.object(services, "ORDER_SQL", f"INSERT INTO `no_such_table` VALUES ({values})"),
        pytest.raises(DatabaseError, match="no_such_table"),
    ):
        place_order(sku=SKU, quantity=2, customer="c1", address="a1")

    assert not _in_transaction()
    assert _stock(stocked) == 20
    assert not Order.objects.exists()


def test_the_last_units_open_the_depletion_in_one_atomic_block(stocked):
    with CaptureQueriesContext(connection) as queries:
        result = place_order(sku=SKU, quantity=20)

    sql = [query["sql"] for query in queries.captured_queries]
    # The quick try was rolled back; transaction.atomic took the units and opened the depletion.
    assert "ROLLBACK" in sql
    assert result.remaining_stock == 0 == _stock(stocked)
    assert stocked.depleted_at is not None
    assert not _in_transaction()


def test_a_refusal_is_counted_and_changes_no_stock(stocked):
    with pytest.raises(OutOfStock):
        place_order(sku=SKU, quantity=21)

    stocked.refresh_from_db()
    assert (stocked.stock, stocked.orders_refused, stocked.units_refused) == (20, 1, 21)
    assert not _in_transaction()


def test_inside_a_callers_transaction_the_order_joins_it(stocked):
    with transaction.atomic():
        place_order(sku=SKU, quantity=2)
        transaction.set_rollback(True)

    assert _stock(stocked) == 20
    assert not Order.objects.exists()
