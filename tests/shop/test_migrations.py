"""Orders placed before a migration get what it adds: a reference, their price, a publication."""

import pytest

BEFORE_REFERENCE = [("shop", "0002_order_customer")]
REFERENCE = [("shop", "0003_order_reference")]
PUBLISHED = [("shop", "0004_order_published_at")]


@pytest.mark.django_db(transaction=True)
def test_existing_orders_get_a_reference_and_a_unit_price(product, migrate_to):
    old = migrate_to(BEFORE_REFERENCE, "shop.Order")
    for quantity in (1, 2):
        old.objects.create(
            product_id=product.pk, quantity=quantity, status="completed", remaining_stock=0
        )

    new = migrate_to(REFERENCE, "shop.Order")

    rows = list(new.objects.values_list("reference", "unit_price"))
    assert len(rows) == 2
    assert len({reference for reference, _ in rows}) == 2
    assert all(len(reference) == 32 for reference, _ in rows)
    assert {price for _, price in rows} == {19900}


@pytest.mark.django_db(transaction=True)
def test_orders_from_before_sales_batches_count_as_published(product, migrate_to):
    old = migrate_to(REFERENCE, "shop.Order")
    placed = old.objects.create(
        product_id=product.pk, quantity=1, status="completed", remaining_stock=0, unit_price=1
    )

    new = migrate_to(PUBLISHED, "shop.Order")

    # Their events went out through the outbox: the relay must not send them again.
    order = new.objects.get(pk=placed.pk)
    assert order.published_at == order.created_at
