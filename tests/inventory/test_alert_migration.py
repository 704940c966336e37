"""Alerts made before double opt-in: one per mailbox survives, and it is asked to confirm."""

from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("inventory", "0005_abuse_resistant_estimates")]
OPT_IN = [("inventory", "0006_alert_opt_in")]


@pytest.fixture
def executor() -> Iterator[MigrationExecutor]:
    """Migrations run backwards and forwards; the schema is the latest again afterwards."""
    yield MigrationExecutor(connection)
    latest = MigrationExecutor(connection)
    latest.migrate(latest.loader.graph.leaf_nodes())


def migrate(targets: list[tuple[str, str]]) -> object:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps.get_model("inventory", "StockAlert")


@pytest.mark.django_db(transaction=True)
def test_variants_waiting_for_one_donut_become_one_unconfirmed_alert(product, executor):
    old = migrate(BEFORE)
    for email in ("Victim+1@example.com", "victim+2@example.com", "other@example.com"):
        old.objects.create(product_id=product.pk, email=email)
    old.objects.create(product_id=product.pk, email="victim@example.com", waiting=None)

    new = migrate(OPT_IN)

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
