"""Staff pages for the outbox: the state filter, and retrying dead events."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nudged.core.models import OutboxEvent
from tests.factory_bridge.sqs import drain
from tests.factory_bridge.test_outbox import event_ids

CHANGELIST = reverse("admin:core_outboxevent_changelist")
SKU = "CP-502101"


def make_event(sku: str, *, state: str) -> OutboxEvent:
    """An outbox row as the relay leaves it: pending, published, or dead after 10 refusals."""
    now, pk = timezone.now(), uuid.uuid4()
    return OutboxEvent.objects.create(
        id=pk,
        topic=OutboxEvent.Topic.STOCK,
        event_type="stock.low",
        body={"event_id": str(pk), "type": "stock.low", "sku": sku},
        attributes={"EventType": "stock.low"},
        sku=sku,
        created_at=now - timedelta(minutes=30),
        published_at=now if state == "published" else None,
        dead_at=now if state == "dead" else None,
        attempts=10 if state == "dead" else 0,
        last_error="NotFound: Topic does not exist" if state == "dead" else "",
        next_attempt_at=now,
    )


def staff_client(django_user_model, *codenames: str) -> Client:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def offered_actions(response) -> set[str]:  # type: ignore[no-untyped-def]
    form = response.context["action_form"]  # None when no action is offered
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def retry(client: Client, *events: OutboxEvent):  # type: ignore[no-untyped-def]
    return client.post(
        CHANGELIST,
        {"action": "retry_dead_selected", "_selected_action": [str(e.pk) for e in events]},
        follow=True,
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "expected"),
    [("dead", {"DEAD"}), ("pending", {"PENDING"}), ("published", {"PUBLISHED"})],
)
def test_the_state_filter_separates_dead_pending_and_published(admin_client, state, expected):
    for sku in ("DEAD", "PENDING", "PUBLISHED"):
        make_event(sku, state=sku.lower())

    response = admin_client.get(CHANGELIST, {"state": state})

    assert response.status_code == 200
    assert {e.sku for e in response.context["cl"].result_list} == expected


@pytest.mark.django_db
def test_retry_is_not_offered_without_its_permission(django_user_model):
    dead = make_event(SKU, state="dead")
    client = staff_client(django_user_model, "view_outboxevent")

    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "retry_dead_selected" not in offered_actions(page)

    retry(client, dead)

    dead.refresh_from_db()
    assert dead.dead_at is not None
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_retrying_dead_events_publishes_them_and_records_who_did_it(aws, django_user_model):
    dead = make_event(SKU, state="dead")
    published = make_event("PUBLISHED", state="published")
    client = staff_client(django_user_model, "view_outboxevent", "retry_outboxevent")
    assert "retry_dead_selected" in offered_actions(client.get(CHANGELIST))

    response = retry(client, dead, published)

    page = response.content.decode()
    assert "Retrying 1 dead event(s). 1 selected event(s) were not dead" in page
    dead.refresh_from_db()
    # Tests run tasks inline: the relay the retry asked for has published it.
    assert dead.dead_at is None
    assert dead.published_at is not None
    assert event_ids(drain(aws, "nudged-ops")) == [str(dead.pk)]
    [entry] = LogEntry.objects.all()
    assert (entry.user.username, entry.object_id) == ("clerk", str(dead.pk))
    assert entry.action_flag == CHANGE
    assert entry.change_message == (
        "Retried dead event after 10 attempts; last error: NotFound: Topic does not exist"
    )
    history = client.get(reverse("admin:core_outboxevent_history", args=[dead.pk]))
    assert "Retried dead event after 10 attempts" in history.content.decode()
