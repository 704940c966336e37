"""Redrive and discard from the admin run in the cluster, not in the web request."""

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.db import connection
from django_q.models import OrmQ

from factory_bridge import tasks
from factory_bridge.models import DlqJob, FailedMessage
from factory_bridge.queues import SqsQueue
from factory_bridge.services import dlq, dlq_jobs
from nudged.core import leases
from tests.factory_bridge.test_admin import CHANGELIST
from tests.factory_bridge.test_clusters import Cluster, database_url, wait_until
from tests.factory_bridge.test_dlq import (
    SKU_A,
    SKU_B,
    bury,
    queue_total,
    record_all_dead,
    shorten_dlq_timing,
)


@pytest.fixture
def dead(aws, db, monkeypatch) -> dict[str, FailedMessage]:  # type: ignore[no-untyped-def]
    shorten_dlq_timing(monkeypatch)
    bury(SKU_A)
    bury(SKU_B)
    return {row.sku: row for row in record_all_dead(2)}


@pytest.fixture
def queued_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The web (this process) queues tasks for a cluster instead of running them inline."""
    monkeypatch.setattr("django_q.conf.Conf.SYNC", False)


def redrive(client, row: FailedMessage):  # type: ignore[no-untyped-def]
    return client.post(
        CHANGELIST, {"action": "redrive_selected", "_selected_action": [row.pk]}, follow=True
    )


@pytest.mark.usefixtures("queued_only")
def test_the_admin_only_queues_the_redrive_and_the_task_runs_it_once(admin_client, dead):
    chosen = dead[SKU_A]

    response = redrive(admin_client, chosen)

    assert response.status_code == 200
    assert "Redrive of 1 message(s) queued as" in response.content.decode()
    job = DlqJob.objects.get()
    assert (job.status, job.outcome, job.started_at) == ("queued", "", None)
    [task] = OrmQ.objects.all()
    assert (task.task["func"], task.task["args"]) == (
        "factory_bridge.tasks.run_dlq_job",
        (job.pk,),
    )
    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.DEAD
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 2
    page = admin_client.get(f"/admin/factory_bridge/dlqjob/{job.pk}/change/").content.decode()
    assert "Queued" in page

    assert tasks.run_dlq_job(job.pk) == "done"
    # A second delivery of the same task finds the job taken and does nothing.
    assert tasks.run_dlq_job(job.pk) == ""

    job.refresh_from_db()
    assert job.outcome == "Redriven: 1 moved, 0 failed, 0 not found in the DLQ."
    chosen.refresh_from_db()
    assert chosen.status == FailedMessage.Status.REDRIVEN
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1
    assert LogEntry.objects.count() == 1


def test_a_job_that_breaks_ends_failed_with_its_error(admin_user, dead):
    job = dlq_jobs.queue_job(action=DlqJob.Action.REDRIVE, rows=[dead[SKU_A]], user_id=None)

    assert job.pk  # run inline by the tests' cluster
    with mock.patch.object(dlq_jobs.dlq, "redrive_rows", side_effect=RuntimeError("boom")):
        other = dlq_jobs.queue_job(action=DlqJob.Action.REDRIVE, rows=[dead[SKU_B]], user_id=None)

    other.refresh_from_db()
    assert (other.status, other.level, other.outcome) == ("failed", "error", "Redrive failed: boom")
    assert other.finished_at is not None
    assert FailedMessage.objects.get(sku=SKU_B).status == FailedMessage.Status.DEAD


@pytest.mark.usefixtures("queued_only")
def test_a_job_waits_while_another_operation_holds_the_dlq(admin_user, dead):
    job = dlq_jobs.queue_job(action=DlqJob.Action.DISCARD, rows=[dead[SKU_A]], user_id=None)
    assert leases.claim(dlq.DLQ_LEASE, "a redrive on the command line")
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            leases.release(dlq.DLQ_LEASE, "a redrive on the command line")

    with mock.patch.object(dlq_jobs, "sleep", wait):
        assert tasks.run_dlq_job(job.pk) == "done"

    assert len(waits) == 3
    job.refresh_from_db()
    assert job.outcome == "Discarded 1 message(s); rows kept for audit."


@pytest.mark.usefixtures("queued_only")
def test_a_job_gives_up_waiting_and_says_why(admin_user, dead, monkeypatch):
    monkeypatch.setattr(dlq_jobs, "BUSY_WAIT_SECONDS", 0)
    job = dlq_jobs.queue_job(action=DlqJob.Action.REDRIVE, rows=[dead[SKU_A]], user_id=None)
    assert leases.claim(dlq.DLQ_LEASE, "a redrive on the command line")

    assert tasks.run_dlq_job(job.pk) == "failed"

    job.refresh_from_db()
    assert job.outcome == (
        "Redrive stopped: another redrive or discard is running; try again when it has "
        "finished. 0 moved before that."
    )
    assert FailedMessage.objects.get(sku=SKU_A).status == FailedMessage.Status.DEAD


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("queued_only")
def test_two_deliveries_of_one_job_at_once_run_it_once(aws, monkeypatch):
    shorten_dlq_timing(monkeypatch)
    bury(SKU_A)
    [row] = record_all_dead(1)
    job = dlq_jobs.queue_job(action=DlqJob.Action.REDRIVE, rows=[row], user_id=None)
    start = threading.Barrier(2)
    results: list[object] = [None, None]

    def deliver(n: int) -> None:
        try:
            start.wait()
            results[n] = tasks.run_dlq_job(job.pk)
        except Exception as exc:  # handed back to the test
            results[n] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results, key=str) == ["", "done"]
    assert queue_total(settings.SQS_RESTOCK_QUEUE) == 1


@pytest.fixture
def cluster(live_server, aws: str, tmp_path: Path, queued_only) -> Iterator[Cluster]:
    """One django-q2 cluster on the test database, with no loops: it runs queued tasks only."""
    import os

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nudged.settings.local",
        "DATABASE_URL": database_url(),
        "AWS_ENDPOINT_URL": aws,
        "SECRET_KEY": settings.SECRET_KEY,
        "Q_WORKERS": "2",
        "LOG_LEVEL": "INFO",
    }
    started = Cluster(1, env, tmp_path / "cluster.log")
    try:
        yield started
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.stop()


@pytest.mark.e2e
def test_a_redrive_and_a_discard_from_the_admin_run_in_the_cluster(cluster, admin_client, aws):
    bury(SKU_A)
    bury(SKU_B)
    rows = {row.sku: row for row in record_all_dead(2)}

    redrive(admin_client, rows[SKU_A])
    admin_client.post(
        CHANGELIST,
        {"action": "discard_selected", "_selected_action": [rows[SKU_B].pk], "confirm": "yes"},
    )

    def over() -> bool:
        return not DlqJob.objects.exclude(status=DlqJob.Status.DONE).exists()

    wait_until(over, seconds=60, what="the jobs to run")
    outcomes = dict(DlqJob.objects.values_list("action", "outcome"))
    assert outcomes == {
        "redrive": "Redriven: 1 moved, 0 failed, 0 not found in the DLQ.",
        "discard": "Discarded 1 message(s); rows kept for audit.",
    }
    statuses = dict(FailedMessage.objects.values_list("sku", "status"))
    assert statuses == {SKU_A: "redriven", SKU_B: "discarded"}
    [moved] = SqsQueue(settings.SQS_RESTOCK_QUEUE).receive(wait=1)
    assert moved.body == rows[SKU_A].body
    assert queue_total(settings.SQS_RESTOCK_DLQ) == 0
    assert LogEntry.objects.count() == 2
