"""Alerts made before double opt-in: one per mailbox survives, and it is asked to confirm."""

import pytest

BEFORE = [("inventory", "0005_abuse_resistant_estimates")]
OPT_IN = [("inventory", "0006_alert_opt_in")]


@pytest.mark.django_db(transaction=True)
def test_variants_waiting_for_one_donut_become_one_unconfirmed_alert(product, migrate_to):
    old = migrate_to(BEFORE, "inventory.StockAlert")
    for email in ("Victim+1@example.com", "victim+2@example.com", "other@example.com"):
        old.objects.create(product_id=product.pk, email=email)
    old.objects.create(product_id=product.pk, email="victim@example.com", waiting=None)

    new = migrate_to(OPT_IN, "inventory.StockAlert")

    rows = {
        a.email: (a.mailbox, a.waiting, a.confirmed_at, a.due_at is not None)
        for a in new.objects.all()
    }
    assert rows == {
        "Victim+1@example.com": ("victim@example.com", True, None, True),
        "victim+2@example.com": ("victim@example.com", None, None, False),
        "other@example.com": ("other@example.com", True, None, True),
        "victim@example.com": ("victim@example.com", None, None, False),
    }
