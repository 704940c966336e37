"""An order outside any transaction that sets nothing else off is one round trip
(shop.services._quick_sell): START TRANSACTION, the UPDATE that takes the units only when
nothing else is due and the purchase limits hold, the order's INSERT from the row it locked,
COMMIT. Anything else goes through transaction.atomic, and nothing is left half done."""

from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from inventory.models import Product, ReorderDecision
from shop import services
from shop.exceptions import BasketShort, OutOfStock, PurchaseLimitReached
from shop.models import Basket, Order
from shop.services import Line, place_basket, place_order

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


def _sent(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries]


def test_an_order_is_one_round_trip_and_commits(stocked):
    with CaptureQueriesContext(connection) as queries:
        result = place_order(sku=SKU.lower(), quantity=2, customer="c1", address="a1")

    [sql] = _sent(queries)
    assert sql.startswith("START TRANSACTION; UPDATE `inventory_product`")
    assert sql.endswith("; COMMIT")
    assert not _in_transaction()
    # The answer names the product as it is stored, whatever case the SKU was sent in.
    assert (result.sku, result.quantity, result.status) == (SKU, 2, Order.Status.COMPLETED)
    assert result.remaining_stock == 18 == _stock(stocked)
    order = Order.objects.get(pk=result.order_id)
    assert (order.quantity, order.customer, order.address) == (2, "c1", "a1")
    assert (order.reference, order.remaining_stock, order.unit_price) == (
        result.reference,
        18,
        stocked.price,
    )
    stocked.refresh_from_db()
    assert stocked.units_sold == 2


@pytest.mark.parametrize(
    ("customer", "address", "per_address", "scope", "bought"),
    [
        ("c1", "a2", None, PurchaseLimitReached.CUSTOMER, 3),
        ("c2", "a1", 4, PurchaseLimitReached.ADDRESS, 3),
    ],
)
def test_a_limit_reached_takes_nothing_and_ends_the_transaction(
    stocked, settings, customer, address, per_address, scope, bought
):
    settings.PURCHASE_LIMIT = 3
    settings.PURCHASE_LIMIT_PER_ADDRESS = per_address
    place_order(sku=SKU, quantity=3, customer="c1", address="a1")

    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(PurchaseLimitReached) as limited,
    ):
        place_order(sku=SKU, quantity=2, customer=customer, address=address)

    # The quick UPDATE changed nothing; transaction.atomic named the limit and rolled back.
    assert _sent(queries)[0].startswith("START TRANSACTION; UPDATE")
    assert (limited.value.scope, limited.value.bought) == (scope, bought)
    assert not _in_transaction()
    assert _stock(stocked) == 17
    assert stocked.orders_limited == 1
    assert Order.objects.count() == 1


def test_a_product_s_own_limit_holds_in_the_quick_update(stocked, settings):
    settings.PURCHASE_LIMIT = 10
    Product.objects.filter(pk=stocked.pk).update(purchase_limit=2)
    place_order(sku=SKU, quantity=1, customer="c1", address="a1")
    place_order(sku=SKU, quantity=1, customer="c1", address="a1")

    with pytest.raises(PurchaseLimitReached) as limited:
        place_order(sku=SKU, quantity=1, customer="c1", address="a1")

    assert (limited.value.limit, limited.value.bought) == (2, 2)
    assert _stock(stocked) == 18


def test_with_the_limits_off_an_order_counts_nothing(stocked, settings):
    settings.PURCHASE_LIMIT = 0
    settings.PURCHASE_LIMIT_PER_ADDRESS = None
    for _ in range(4):
        with CaptureQueriesContext(connection) as queries:
            place_order(sku=SKU, quantity=4, customer="c1", address="a1")
        assert len(queries) == 1

    assert _stock(stocked) == 4


def test_a_failed_insert_rolls_the_units_back(stocked):
    broken = services.QUICK_ORDER_SQL.replace("INSERT INTO `shop_order`", "INSERT INTO `no_such`")
    with (
        mock.patch.object(services, "QUICK_ORDER_SQL", broken),
        pytest.raises(DatabaseError, match="no_such"),
    ):
        place_order(sku=SKU, quantity=2, customer="c1", address="a1")

    assert not _in_transaction()
    assert _stock(stocked) == 20
    assert not Order.objects.exists()


def test_the_last_units_open_the_depletion_in_one_atomic_block(stocked):
    with CaptureQueriesContext(connection) as queries:
        result = place_order(sku=SKU, quantity=20)

    sent = _sent(queries)
    # The quick UPDATE matched nothing (it leaves stock above zero); transaction.atomic took
    # the units and opened the depletion.
    assert sent[0].startswith("START TRANSACTION; UPDATE") and len(sent) > 1
    assert result.remaining_stock == 0 == _stock(stocked)
    assert stocked.depleted_at is not None
    assert not _in_transaction()


def test_an_order_that_calls_for_a_reorder_decides_it(stocked):
    Product.objects.filter(pk=stocked.pk).update(
        replenishment_mode=Product.Mode.ADAPTIVE, reorder_point=15, on_order=0, promised=0
    )

    result = place_order(sku=SKU, quantity=6)

    assert result.remaining_stock == 14 == _stock(stocked)
    assert ReorderDecision.objects.filter(product=stocked).exists()


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


@pytest.fixture
def box(stocked: Product) -> list[Product]:
    other = Product.objects.create(
        sku="CP-2", name="B", price=500, stock=20, factory_id=stocked.factory_id
    )
    return [stocked, other]


def test_a_basket_from_the_shelf_is_one_round_trip_after_its_products_ids(box):
    with CaptureQueriesContext(connection) as queries:
        placed = place_basket(
            lines=[Line(sku="cp-2", quantity=3), Line(sku=SKU, quantity=2)],
            customer="c1",
            address="a1",
        )

    ids, sql = _sent(queries)
    assert ids.startswith("SELECT")
    assert sql.startswith("START TRANSACTION; UPDATE `inventory_product`")
    assert "ORDER BY `p`.`id`" in sql
    assert sql.endswith("IF @taken = 2 THEN COMMIT; ELSE ROLLBACK; END IF; END")
    assert not _in_transaction()
    assert [(line.sku, line.quantity, line.remaining_stock) for line in placed.lines] == [
        ("CP-2", 3, 17),
        (SKU, 2, 18),
    ]
    assert placed.total == 3 * 500 + 2 * box[0].price
    basket = Basket.objects.get(reference=placed.reference)
    assert sorted(basket.lines.values_list("quantity", "customer", "address", "unit_price")) == [
        (2, "c1", "a1", box[0].price),
        (3, "c1", "a1", 500),
    ]


def test_a_basket_one_line_of_which_the_shelf_cannot_serve_is_rolled_back_whole(box):
    with CaptureQueriesContext(connection) as queries, pytest.raises(BasketShort) as short:
        place_basket(lines=[Line(sku=SKU, quantity=2), Line(sku="CP-2", quantity=21)])

    # The quick try took CP-502101's units, then MariaDB rolled them back itself.
    assert "ELSE ROLLBACK" in _sent(queries)[1]
    assert [(line.sku, line.available) for line in short.value.lines] == [("CP-2", 20)]
    assert not _in_transaction()
    assert [_stock(product) for product in box] == [20, 20]
    assert not Order.objects.exists() and not Basket.objects.exists()


def test_a_basket_past_a_line_s_limit_takes_nothing(box, settings):
    settings.PURCHASE_LIMIT = 3
    place_order(sku="CP-2", quantity=2, customer="c1", address="a1")

    with pytest.raises(PurchaseLimitReached) as limited:
        place_basket(
            lines=[Line(sku=SKU, quantity=3), Line(sku="CP-2", quantity=2)],
            customer="c1",
            address="a1",
        )

    assert (limited.value.sku, limited.value.bought) == ("CP-2", 2)
    assert [_stock(product) for product in box] == [20, 18]
    assert not _in_transaction()
