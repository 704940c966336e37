"""The hourly purge: every app's history past its retention, and expired sessions."""

from datetime import timedelta
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone
from django_q.models import Schedule

from factory_bridge.models import MessageFailure, RestockRequest
from factory_bridge.services.schedules import install_schedules
from inventory.models import ReorderDecision, StockAdjustment, StockAlert
from nudged import tasks
from nudged.core.models import OutboxEvent
from nudged.core.purges import delete_in_batches
from nudged.ops import purges
from nudged.settings.base import RETENTION_SETTINGS
from tests.test_settings import COMPLETE, manage, settings_value

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_events")]

Status = RestockRequest.Status
NOW = timezone.now()


def days_ago(days: float):  # type: ignore[no-untyped-def]
    return NOW - timedelta(days=days)


def decision(product, *, age: float) -> ReorderDecision:  # type: ignore[no-untyped-def]
    made = ReorderDecision.objects.create(
        product=product,
        quantity=10,
        mode=product.replenishment_mode,
        reason="test",
        on_hand=0,
        on_order=0,
        demand_rate=0.0,
        lead_time=10.0,
        reorder_point=0,
    )
    ReorderDecision.objects.filter(pk=made.pk).update(created_at=days_ago(age))
    return made


def restock(product, status: str, *, age: float, **fields) -> RestockRequest:  # type: ignore[no-untyped-def]
    made = RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        status=status,
        depletion_key=f"depletion-{RestockRequest.objects.count()}",
        **fields,
    )
    RestockRequest.objects.filter(pk=made.pk).update(
        created_at=days_ago(age), updated_at=days_ago(age)
    )
    return made


def adjustment(product, *, age: float) -> StockAdjustment:  # type: ignore[no-untyped-def]
    made = StockAdjustment.objects.create(
        product=product, reason=StockAdjustment.Reason.COUNT, old_quantity=0, new_quantity=1
    )
    StockAdjustment.objects.filter(pk=made.pk).update(created_at=days_ago(age))
    return made


def failure(*, age: float) -> MessageFailure:
    made = MessageFailure.objects.create(
        fingerprint=f"fp-{MessageFailure.objects.count()}", sqs_message_id="m", queue="q", error="e"
    )
    MessageFailure.objects.filter(pk=made.pk).update(updated_at=days_ago(age))
    return made


def alert(product, *, mailbox: str, age: float, **fields: object) -> StockAlert:  # type: ignore[no-untyped-def]
    made = StockAlert.objects.create(product=product, email=mailbox, mailbox=mailbox, **fields)
    StockAlert.objects.filter(pk=made.pk).update(created_at=days_ago(age))
    return made


def session(*, expired: bool) -> str:
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store["customer"] = "someone"
    store.create()
    expiry = NOW - timedelta(hours=1) if expired else NOW + timedelta(days=1)
    Session.objects.filter(session_key=store.session_key).update(expire_date=expiry)
    return store.session_key


def test_the_hourly_purge_deletes_only_history_past_its_retention(product):
    keep = settings.RESTOCK_RETENTION_DAYS
    arrived_long_ago = restock(
        product, Status.FULFILLED, age=keep + 1, decision=decision(product, age=keep + 1)
    )
    overdue_long_ago = restock(product, Status.OVERDUE, age=keep + 2)
    given_up_long_ago = restock(product, Status.FAILED, age=keep + 3, next_attempt_at=None)
    kept_restocks = [
        restock(product, Status.FULFILLED, age=keep - 1),
        # Still being retried, or still at the factory, however old.
        restock(product, Status.FAILED, age=keep + 3, next_attempt_at=NOW),
        restock(product, Status.REQUESTED, age=keep + 4),
        restock(product, Status.PENDING, age=keep + 5),
    ]
    # The product's latest restock failed long ago: the admin still flags it.
    latest = restock(product, Status.FAILED, age=keep + 1, next_attempt_at=None)
    RestockRequest.objects.filter(pk=latest.pk).update(created_at=NOW)
    kept_restocks.append(latest)

    age = settings.REORDER_DECISION_RETENTION_DAYS
    decision(product, age=age + 1)
    kept_decisions = [
        decision(product, age=age - 1),
        # A restock in production refers to it.
        restock(product, Status.REQUESTED, age=1, decision=decision(product, age=age + 1)).decision,
    ]
    kept_restocks.append(RestockRequest.objects.get(decision=kept_decisions[1]))
    age = settings.STOCK_ADJUSTMENT_RETENTION_DAYS
    adjustment(product, age=age + 1)
    kept_adjustment = adjustment(product, age=age - 1)
    age = settings.MESSAGE_FAILURE_RETENTION_DAYS
    failure(age=age + 1)
    kept_failure = failure(age=age - 1)
    OutboxEvent.objects.create(
        topic=OutboxEvent.Topic.SALES,
        event_type="order.completed",
        body={},
        attributes={},
        sku=product.sku,
        published_at=days_ago(settings.OUTBOX_RETENTION_DAYS + 1),
    )
    age = settings.ALERT_RETENTION_DAYS
    alert(product, mailbox="sent@example.com", age=age + 1, waiting=None, notified_at=NOW)
    alert(product, mailbox="never@example.com", age=age + 1)
    kept_alerts = [
        alert(product, mailbox="recent@example.com", age=age - 1, waiting=None, notified_at=NOW),
        # Confirmed and still waiting for its donut, however old.
        alert(product, mailbox="patient@example.com", age=age + 1, confirmed_at=NOW),
    ]
    expired, current = session(expired=True), session(expired=False)

    deleted = tasks.purge_history()

    assert set(RestockRequest.objects.values_list("pk", flat=True)) == {r.pk for r in kept_restocks}
    assert not {arrived_long_ago.pk, overdue_long_ago.pk, given_up_long_ago.pk} & set(
        RestockRequest.objects.values_list("pk", flat=True)
    )
    # The fulfilled restock's decision went with it, in the same run.
    assert set(ReorderDecision.objects.values_list("pk", flat=True)) == {
        d.pk for d in kept_decisions
    }
    assert list(StockAdjustment.objects.values_list("pk", flat=True)) == [kept_adjustment.pk]
    assert list(MessageFailure.objects.values_list("pk", flat=True)) == [kept_failure.pk]
    assert set(StockAlert.objects.values_list("pk", flat=True)) == {a.pk for a in kept_alerts}
    assert not OutboxEvent.objects.exists()
    assert list(Session.objects.values_list("session_key", flat=True)) == [current]
    assert expired != current
    assert deleted == {
        purges.SESSIONS: -1,
        "factory_bridge.services.outbox.purge_published": 1,
        "factory_bridge.services.purges.purge_restocks": 3,
        "factory_bridge.services.purges.purge_message_failures": 1,
        "inventory.purges.purge_reorder_decisions": 2,
        "inventory.purges.purge_stock_adjustments": 1,
        "inventory.alerts.purge_alerts": 2,
    }


def test_a_failing_purge_leaves_the_others_to_run(product, monkeypatch):
    failure(age=settings.MESSAGE_FAILURE_RETENTION_DAYS + 1)
    monkeypatch.setattr(
        purges,
        "PURGES",
        (("tests.test_purges.broken_purge", "OUTBOX_RETENTION_DAYS"), *purges.PURGES),
    )

    deleted = purges.purge_all()

    assert "tests.test_purges.broken_purge" not in deleted
    assert deleted["factory_bridge.services.purges.purge_message_failures"] == 1


def broken_purge(*, before) -> int:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    raise OperationalError("lock wait timeout")


def test_deletes_go_a_batch_at_a_time(product):
    for _ in range(5):
        adjustment(product, age=400)

    assert delete_in_batches(rows=StockAdjustment.objects.all(), batch_size=2) == 5
    assert not StockAdjustment.objects.exists()


def test_one_schedule_runs_every_purge_hourly_and_replaces_the_outbox_purge():
    Schedule.objects.create(
        name="outbox-purge",
        func="factory_bridge.tasks.purge_outbox",
        schedule_type=Schedule.MINUTES,
        minutes=60,
    )

    install_schedules()

    schedule = Schedule.objects.get(name="purge")
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "nudged.tasks.purge_history",
        Schedule.MINUTES,
        60,
        -1,
    )
    assert not Schedule.objects.filter(name="outbox-purge").exists()


@pytest.mark.parametrize("name", RETENTION_SETTINGS)
def test_a_retention_below_one_day_stops_the_process(name):
    result = manage("check", **COMPLETE, **{name: "0"})

    assert result.returncode == 1
    assert result.stderr == (
        f"nudged.settings.production: {name} must be at least 1 (days), not 0.\n"
    )


def test_retentions_come_from_the_environment():
    given = {name: str(n) for n, name in enumerate(RETENTION_SETTINGS, start=2)}
    expression = "[" + ", ".join(f"settings.{name}" for name in RETENTION_SETTINGS) + "]"

    assert settings_value(expression, **COMPLETE, **given) == str(list(range(2, len(given) + 2)))
