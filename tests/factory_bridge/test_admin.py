"""Staff pages: failed messages (inspect, redrive, discard), restock requests, products."""

import html
import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from factory_bridge.models import DlqJob, FailedMessage, RestockRequest
from factory_bridge.queues import SqsQueue
from tests.factory_bridge.test_dlq import (
    SKU_A,
    SKU_B,
    bury,
    depletion_envelope,
    queue_total,
    record_all_dead,
    shorten_dlq_timing,
)

CHANGELIST = reverse("admin:factory_bridge_failedmessage_changelist")


@pytest.fixture
def quick_dlq(monkeypatch: pytest.MonkeyPatch) -> None:
    shorten_dlq_timing(monkeypatch)


def make_row(sku: str, *, status: str = "dead", hours_old: int = 2) -> FailedMessage:
    """A FailedMessage row as the watcher writes it, without going through SQS."""
    body = depletion_envelope(sku)
    seen = timezone.now() - timedelta(hours=hours_old)
    return FailedMessage.objects.create(
        fingerprint=json.loads(body)["MessageId"],
        sqs_message_id=f"sqs-{sku}-{status}",
        source_queue=settings.SQS_RESTOCK_QUEUE,
        dlq=settings.SQS_RESTOCK_DLQ,
        body=body,
        attributes={"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000000"},
        message_attributes={},
        event_type="stock.depleted",
        sku=sku,
        receive_count=3,
        last_error="factory status: factory answered 500: simulated factory failure",
        status=status,
        first_seen_at=seen,
        last_seen_at=seen,
    )


def job_url(job: DlqJob) -> str:
    return reverse("admin:factory_bridge_dlqjob_change", args=[job.pk])


def listed(response) -> set[str]:  # type: ignore[no-untyped-def]
    return {row.sqs_message_id for row in response.context["cl"].result_list}


# --- the failed-message list and detail


def test_changelist_shows_status_type_sku_error_and_age(admin_client):
    make_row(SKU_A)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    for column in ("status", "event_type", "sku", "short_error", "age"):
        assert f"column-{column}" in page
    assert "sqs-CP-502101-dead" in page
    assert '<td class="field-status">Dead (in the DLQ)</td>' in page
    assert '<td class="field-event_type">stock.depleted</td>' in page
    assert f'<td class="field-sku">{SKU_A}</td>' in page
    assert "factory status: factory answered 500" in page
    assert '<td class="field-age">2 h</td>' in page


def test_changelist_filters_by_status(admin_client):
    make_row(SKU_A, status="dead")
    make_row(SKU_B, status="redriven")

    response = admin_client.get(CHANGELIST, {"status__exact": "dead"})

    assert response.status_code == 200
    assert listed(response) == {"sqs-CP-502101-dead"}


def test_changelist_searches_by_sku_and_by_message_id(admin_client):
    make_row(SKU_A)
    make_row(SKU_B)

    by_sku = admin_client.get(CHANGELIST, {"q": SKU_B})
    by_id = admin_client.get(CHANGELIST, {"q": "sqs-CP-502101-dead"})

    assert listed(by_sku) == {"sqs-CP-502102-dead"}
    assert listed(by_id) == {"sqs-CP-502101-dead"}


def test_changelist_searches_by_fingerprint(admin_client):
    row = make_row(SKU_A)
    make_row(SKU_B)

    response = admin_client.get(CHANGELIST, {"q": row.fingerprint})

    assert listed(response) == {"sqs-CP-502101-dead"}


def test_detail_pretty_prints_body_with_the_inner_message_and_attributes(admin_client):
    row = make_row(SKU_A)

    response = admin_client.get(reverse("admin:factory_bridge_failedmessage_change", args=[row.pk]))

    assert response.status_code == 200
    blocks = [
        html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", response.content.decode(), re.S)
    ]
    body, attributes = blocks
    assert json.loads(body)["Message"]["type"] == "stock.depleted"
    # The inner SNS Message is expanded into indented JSON, not left as an escaped string.
    assert '  "Message": {\n    "event_id": ' in body
    assert f'    "sku": "{SKU_A}"' in body
    assert '"Subject": "도너츠 재고 부족"' in body
    assert json.loads(attributes) == {"system": row.attributes, "message": {}}
    assert "\n  " in attributes


def test_rows_cannot_be_added_or_deleted_by_hand(admin_client):
    row = make_row(SKU_A)

    add = admin_client.get(reverse("admin:factory_bridge_failedmessage_add"))
    delete = admin_client.get(reverse("admin:factory_bridge_failedmessage_delete", args=[row.pk]))

    assert add.status_code == 403
    assert delete.status_code == 403


# --- actions, against the real DLQ


@pytest.fixture
def dead(aws, db, quick_dlq) -> dict[str, FailedMessage]:  # type: ignore[no-untyped-def]
    bury(SKU_A)
    bury(SKU_B)
    return {row.sku: row for row in record_all_dead(2)}


def act(admin_client, action: str, row: FailedMessage, **extra: str):  # type: ignore[no-untyped-def]
    return admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [row.pk], **extra}, follow=True
    )


def finished_job() -> DlqJob:
    """The one job queued, which the tests' inline cluster has run by now."""
    job = DlqJob.objects.get()
    assert job.status in (DlqJob.Status.DONE, DlqJob.Status.FAILED)
    assert job.started_at <= job.finished_at
    return job


def test_redrive_action_moves_the_message_back_and_marks_the_row(admin_client, dead):
    chosen = dead[SKU_A]

    response = act(admin_client, "redrive_selected", chosen)

    assert response.status_code == 200
    job = finished_job()
    assert f'Redrive of 1 message(s) queued as <a href="{job_url(job)}">' in (
        response.content.decode()
    )
    assert (job.action, job.status, job.level) == ("redrive", "done", "success")
    assert job.outcome == "Redriven: 1 moved, 0 failed, 0 not found in the DLQ."
    assert list(job.messages.all()) == [chosen]
    assert job.outcome in admin_client.get(job_url(job)).content.decode()
    detail = admin_client.get(
        reverse("admin:factory_bridge_failedmessage_change", args=[chosen.pk])
    )
    assert job.outcome in detail.content.decode()
    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.REDRIVEN
    assert chosen.redriven_at is not None
    [moved] = SqsQueue(settings.SQS_RESTOCK_QUEUE).receive(wait=1)
    assert moved.body == chosen.body
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
    assert FailedMessage.objects.get(sku=SKU_B).status == FailedMessage.Status.DEAD


def test_discard_action_asks_first_then_deletes_from_the_dlq_and_keeps_the_row(admin_client, dead):
    chosen = dead[SKU_A]

    asked = act(admin_client, "discard_selected", chosen)

    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Discard these dead messages?" in page
    assert chosen.sqs_message_id in page
    assert 'name="confirm" value="yes"' in page
    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.DEAD
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 2

    assert not DlqJob.objects.exists()

    done = act(admin_client, "discard_selected", chosen, confirm="yes")

    assert done.status_code == 200
    assert "Discard of 1 message(s) queued as" in done.content.decode()
    assert finished_job().outcome == "Discarded 1 message(s); rows kept for audit."
    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.DISCARDED
    assert chosen.discarded_at is not None
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert FailedMessage.objects.count() == 2


def test_redrive_action_counts_rows_that_were_not_dead_as_skipped(admin_client, dead):
    done = make_row("CP-502103", status="redriven")

    response = admin_client.post(
        CHANGELIST,
        {"action": "redrive_selected", "_selected_action": [dead[SKU_A].pk, done.pk]},
        follow=True,
    )

    assert "Redrive of 2 message(s) queued as" in response.content.decode()
    assert (
        finished_job().outcome
        == "Redriven: 1 moved, 0 failed, 0 not found in the DLQ. 1 skipped (not dead)."
    )


def test_redrive_action_says_why_a_message_held_elsewhere_was_not_found(admin_client, dead):
    assert len(SqsQueue(settings.SQS_RESTOCK_DLQ).receive(visibility=60)) == 2

    act(admin_client, "redrive_selected", dead[SKU_A])

    job = finished_job()
    assert job.level == "error"
    assert "Redriven: 0 moved, 0 failed, 1 not found in the DLQ." in job.outcome
    assert "The DLQ holds 2 message(s), 2 of them in flight" in job.outcome
    assert FailedMessage.objects.get(sku=SKU_A).status == FailedMessage.Status.DEAD


def test_discard_action_reports_a_message_it_could_not_delete(admin_client, dead):
    assert len(SqsQueue(settings.SQS_RESTOCK_DLQ).receive(visibility=60)) == 2

    act(admin_client, "discard_selected", dead[SKU_A], confirm="yes")

    job = finished_job()
    assert job.level == "warning"
    assert "Discarded 0 message(s); rows kept for audit." in job.outcome
    assert "1 not found or not deleted: they stay dead; try again in a minute." in job.outcome
    assert FailedMessage.objects.get(sku=SKU_A).status == FailedMessage.Status.DEAD


def test_detail_shows_a_deeply_nested_body_as_it_is(admin_client):
    row = make_row(SKU_A)
    FailedMessage.objects.filter(pk=row.pk).update(body="[" * 100_000)

    response = admin_client.get(reverse("admin:factory_bridge_failedmessage_change", args=[row.pk]))

    assert response.status_code == 200
    assert "[" * 1000 in response.content.decode()


# --- admin index banner and the other pages


def test_index_shows_the_dead_message_count(admin_client):
    make_row(SKU_A)
    make_row(SKU_B)
    make_row("CP-502103", status="discarded")

    page = admin_client.get(reverse("admin:index")).content.decode()

    banner = re.search(r'<div[^>]*id="dead-letter-summary".*?</div>', page, re.S)
    assert banner is not None
    assert "2 dead messages" in banner.group(0)
    assert f"{CHANGELIST}?status__exact=dead" in banner.group(0)


def test_index_says_when_no_message_is_dead(admin_client):
    make_row(SKU_A, status="redriven")

    page = admin_client.get(reverse("admin:index")).content.decode()

    assert 'id="dead-letter-summary"' in page
    assert "No dead messages." in page


def test_restock_request_list_loads(admin_client, product):
    RestockRequest.objects.create(
        product=product, factory=product.factory, quantity=10, depletion_key="event-1"
    )

    response = admin_client.get(reverse("admin:factory_bridge_restockrequest_changelist"))

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1


def test_restock_list_shows_what_happened_and_failed_in_red(admin_client, product):
    RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        depletion_key="event-failed",
        status=RestockRequest.Status.FAILED,
        last_error="factory unreachable",
        next_attempt_at=None,
    )

    page = admin_client.get(reverse("admin:factory_bridge_restockrequest_changelist"))

    html = page.content.decode()
    assert '<strong class="status-alert">Failed: needs staff</strong>' in html
    assert "factory unreachable" in html


def test_product_page_shows_open_restock_requests(admin_client, product):
    RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        depletion_key="event-open",
        status=RestockRequest.Status.REQUESTED,
        factory_job_id="job-open",
    )
    RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        depletion_key="event-done",
        status=RestockRequest.Status.FULFILLED,
        factory_job_id="job-done",
    )

    response = admin_client.get(reverse("admin:inventory_product_change", args=[product.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Restock requests in progress or failed" in page
    assert "job-open" in page
    assert "job-done" not in page


# --- who may redrive or discard, and the record of who did


@pytest.fixture
def staff_with(django_user_model):  # type: ignore[no-untyped-def]
    """A staff user (not superuser) holding the named factory_bridge permissions."""

    def make(*codenames: str):  # type: ignore[no-untyped-def]
        user = django_user_model.objects.create_user(
            f"staff-{len(codenames)}-{'-'.join(codenames)}"[:150], password="x", is_staff=True
        )
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="factory_bridge", codename__in=codenames
            )
        )
        return user

    return make


def offered_actions(response) -> set[str]:  # type: ignore[no-untyped-def]
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


def test_a_view_only_user_sees_the_messages_but_no_action(client, staff_with, dead):
    client.force_login(staff_with("view_failedmessage"))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert listed(response) == {row.sqs_message_id for row in dead.values()}
    assert offered_actions(response) == set()
    assert "redrive_selected" not in response.content.decode()


def test_a_view_only_user_cannot_post_the_actions(client, staff_with, dead):
    client.force_login(staff_with("view_failedmessage"))
    chosen = dead[SKU_A]

    act(client, "redrive_selected", chosen)
    act(client, "discard_selected", chosen, confirm="yes")

    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.DEAD
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 2
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 0
    assert not LogEntry.objects.exists()


def test_each_permission_offers_its_own_action(client, staff_with, dead):
    client.force_login(staff_with("view_failedmessage", "redrive_failedmessage"))
    redrive_only = offered_actions(client.get(CHANGELIST))
    client.force_login(staff_with("view_failedmessage", "discard_failedmessage"))
    discard_only = offered_actions(client.get(CHANGELIST))

    assert redrive_only == {"redrive_selected"}
    assert discard_only == {"discard_selected"}


def test_a_redrive_is_recorded_in_the_message_history(client, staff_with, dead):
    user = staff_with("view_failedmessage", "redrive_failedmessage")
    client.force_login(user)
    chosen = dead[SKU_A]

    act(client, "redrive_selected", chosen)

    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.REDRIVEN
    [entry] = LogEntry.objects.all()
    assert entry.user == user
    assert entry.object_id == str(chosen.pk)
    assert chosen.sqs_message_id in entry.object_repr
    job = DlqJob.objects.get()
    assert job.requested_by == user
    assert entry.get_change_message() == f"Redrive from the admin (job {job.pk}); now: Redriven"
    viewer = staff_with("view_failedmessage")
    client.force_login(viewer)
    history = client.get(reverse("admin:factory_bridge_failedmessage_history", args=[chosen.pk]))
    assert history.status_code == 200
    page = history.content.decode()
    assert f"Redrive from the admin (job {job.pk}); now: Redriven" in page
    # Whoever sees the messages sees the jobs run on them.
    assert client.get(job_url(job)).status_code == 200
    assert user.username in page


def test_a_discard_is_recorded_in_the_message_history(client, staff_with, dead):
    user = staff_with("view_failedmessage", "discard_failedmessage")
    client.force_login(user)
    chosen = dead[SKU_B]

    act(client, "discard_selected", chosen, confirm="yes")

    [entry] = LogEntry.objects.all()
    assert entry.user == user
    assert entry.object_id == str(chosen.pk)
    job = DlqJob.objects.get()
    assert entry.get_change_message() == f"Discard from the admin (job {job.pk}); now: Discarded"
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 1
