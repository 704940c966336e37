"""Orders placed before references existed get one, and the price they were sold at."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("shop", "0002_order_customer")]
AFTER = [("shop", "0003_order_reference")]


@pytest.mark.django_db(transaction=True)
def test_existing_orders_get_a_reference_and_a_unit_price(product):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps.get_model("shop", "Order")
    for quantity in (1, 2):
        old.objects.create(
            product_id=product.pk, quantity=quantity, status="completed", remaining_stock=0
        )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("shop", "Order")

    rows = list(new.objects.values_list("reference", "unit_price"))
    assert len(rows) == 2
    assert len({reference for reference, _ in rows}) == 2
    assert all(len(reference) == 32 for reference, _ in rows)
    assert {price for _, price in rows} == {19900}
