"""Catalog reads: what is on its way from the factory."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from factory_bridge.models import RestockRequest
from inventory.models import Product
from inventory.selectors import product_get, product_list, product_list_for_staff

pytestmark = pytest.mark.usefixtures("no_events")

Status = RestockRequest.Status


def restock(product: Product, status: str, quantity: int = 10, **fields: object) -> RestockRequest:
    return RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=quantity,
        status=status,
        depletion_key=f"depletion-{status}-{quantity}",
        **fields,
    )


@pytest.mark.parametrize(
    "status", [Status.PENDING, Status.FAILED, Status.OVERDUE, Status.FULFILLED]
)
def test_only_an_order_the_factory_accepted_is_incoming(product, status):
    restock(product, status)

    assert product_get(sku=product.sku).incoming == 0
    assert product_get(sku=product.sku).restock_requested_at is None


def test_incoming_is_the_accepted_order_and_when_the_factory_accepted_it(product):
    accepted_at = timezone.now() - timedelta(minutes=3)
    restock(product, Status.REQUESTED, quantity=10, requested_at=accepted_at)
    restock(product, Status.PENDING, quantity=7)

    listed = product_get(sku=product.sku)

    assert listed.incoming == 10
    assert listed.restock_requested_at == accepted_at


def test_staff_see_the_status_of_the_latest_restock(product):
    restock(product, Status.FULFILLED)
    restock(product, Status.FAILED)

    [listed] = product_list_for_staff()

    assert listed.restock_status == Status.FAILED


def rows_read(query: object) -> int:
    """Rows MySQL read (through indexes or tables) to answer the query.

    The session's counters are read before and after (FLUSH STATUS would commit the test's
    transaction).
    """

    def handler_reads() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%%'")
            return sum(int(value) for _, value in cursor.fetchall())

    before = handler_reads()
    list(query)
    return handler_reads() - before


def test_the_product_list_reads_only_the_restocks_in_production(product):
    """Every storefront view lists the products: the restocks of the past must not cost it."""
    RestockRequest.objects.bulk_create(
        RestockRequest(
            product=product,
            factory=product.factory,
            quantity=10,
            status=Status.FULFILLED,
            depletion_key=f"past-{n}",
        )
        for n in range(500)
    )
    restock(product, Status.REQUESTED, quantity=4)

    listed = product_list()

    assert [p.incoming for p in listed] == [4]
    assert rows_read(product_list()) < 50
