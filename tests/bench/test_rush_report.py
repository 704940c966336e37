"""What the rush's sampler reads from the database."""

import pytest
from django.db import connection
from django.utils import timezone

from bench.rush_report import SQL_BACKLOG
from nudged.core.models import OutboxEvent
from shop.models import Order


def order(product, status: str, *, published: bool = False) -> Order:  # type: ignore[no-untyped-def]
    return Order.objects.create(
        product=product,
        quantity=1,
        status=status,
        unit_price=product.price,
        remaining_stock=0,
        published_at=timezone.now() if published else None,
    )


@pytest.mark.django_db
def test_the_backlog_is_what_the_relay_has_to_publish_not_the_pre_orders_waiting(product):
    order(product, Order.Status.COMPLETED, published=True)
    order(product, Order.Status.BACKORDERED)  # waits for its batch, not for the relay
    order(product, Order.Status.COMPLETED)
    order(product, Order.Status.COMPLETED, published=True)
    order(product, Order.Status.COMPLETED)
    OutboxEvent.objects.create(
        topic=OutboxEvent.Topic.STOCK,
        event_type="stock.low",
        sku=product.sku,
        body={},
        attributes={},
    )

    with connection.cursor() as cursor:
        cursor.execute(SQL_BACKLOG)
        [(backlog,)] = cursor.fetchall()

    # The stock event and two sales, one of them older than a sale already published (a
    # pre-order served after later orders went out); not the pre-order waiting for its batch.
    assert backlog == 3
