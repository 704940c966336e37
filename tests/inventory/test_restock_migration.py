"""Products made before they kept their restocks' units: the migration fills them in."""

from datetime import timedelta

import pytest
from django.utils import timezone

RESTOCKS = ("factory_bridge", "0012_move_outbox_and_leases_to_core")
BEFORE = [("inventory", "0007_pre_order_promises"), RESTOCKS]
AFTER = [("inventory", "0008_product_restock_columns"), RESTOCKS]


@pytest.mark.django_db(transaction=True)
def test_units_in_production_and_the_latest_status_come_from_the_restocks(
    product, factory, migrate_to
):
    restocks = migrate_to(BEFORE, "factory_bridge.RestockRequest")
    old_product = migrate_to(BEFORE, "inventory.Product")
    quiet = old_product.objects.create(sku="CP-1", name="quiet", price=1, factory_id=factory.pk)
    accepted = timezone.now() - timedelta(minutes=5)
    rows = [
        ("fulfilled", 10, accepted - timedelta(minutes=9)),
        ("requested", 10, accepted - timedelta(minutes=1)),
        ("requested", 6, accepted),
        ("overdue", 10, accepted - timedelta(minutes=20)),
        ("failed", 4, None),
    ]
    for n, (status, quantity, requested_at) in enumerate(rows):
        restocks.objects.create(
            product_id=product.pk,
            factory_id=factory.pk,
            quantity=quantity,
            status=status,
            depletion_key=f"depletion-{n}",
            requested_at=requested_at,
        )

    products = migrate_to(AFTER, "inventory.Product").objects
    filled = products.get(pk=product.pk)

    assert (filled.incoming, filled.restock_requested_at) == (16, accepted)
    assert filled.restock_status == "failed"
    assert filled.restock_id == restocks.objects.get(depletion_key="depletion-4").pk
    untouched = products.get(pk=quiet.pk)
    assert (untouched.incoming, untouched.restock_requested_at) == (0, None)
    assert (untouched.restock_id, untouched.restock_status) == (None, "")
