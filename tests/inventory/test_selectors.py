"""Catalog reads: what is on its way from the factory."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from factory_bridge.models import RestockRequest
from inventory.models import Product, RestockStatus
from inventory.selectors import product_get, product_list, product_list_for_staff
from inventory.services import restock_moved
from tests.restocks import plant_restock

pytestmark = pytest.mark.usefixtures("no_events")

Status = RestockStatus


def shown(product: Product) -> tuple[int, object, str]:
    listed = product_get(sku=product.sku)
    return listed.incoming, listed.restock_requested_at, listed.restock_status


def test_units_the_factory_accepted_are_incoming_until_they_leave_production(product):
    first = timezone.now() - timedelta(minutes=3)
    second = first + timedelta(minutes=1)

    restock_moved(product_id=product.pk, restock_id=1, status=Status.PENDING)
    assert shown(product) == (0, None, Status.PENDING)
    restock_moved(
        product_id=product.pk,
        restock_id=1,
        status=Status.REQUESTED,
        incoming=10,
        in_production_since=first,
    )
    restock_moved(
        product_id=product.pk,
        restock_id=2,
        status=Status.REQUESTED,
        incoming=7,
        in_production_since=second,
    )
    assert shown(product) == (17, second, Status.REQUESTED)
    restock_moved(
        product_id=product.pk,
        restock_id=2,
        status=Status.FULFILLED,
        incoming=-7,
        in_production_since=first,
    )
    assert shown(product) == (10, first, Status.FULFILLED)


def test_only_the_latest_restock_sets_the_status_staff_see(product):
    restock_moved(product_id=product.pk, restock_id=5, status=Status.FAILED)
    restock_moved(product_id=product.pk, restock_id=4, status=Status.FULFILLED)

    [listed] = product_list_for_staff()

    assert (listed.restock_id, listed.restock_status) == (5, Status.FAILED)


def test_incoming_never_goes_below_zero(product):
    restock_moved(product_id=product.pk, restock_id=1, status=Status.FULFILLED, incoming=-10)

    assert shown(product) == (0, None, Status.FULFILLED)


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
    plant_restock(product, Status.REQUESTED, quantity=4)

    listed = product_list()

    assert [p.incoming for p in listed] == [4]
    assert rows_read(product_list()) < 50
