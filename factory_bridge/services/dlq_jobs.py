"""Redrive and discard for staff, run by the cluster: the admin queues a job, a task runs it.

A DLQ operation searches the DLQ until it has been quiet for a few seconds, and SQS may be
slow: longer than a web request may take. The job row holds what staff chose, where the job
stands, and once it is over, the same summary the command line prints.
"""

import logging
from collections.abc import Sequence
from time import monotonic, sleep

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.utils import timezone

from factory_bridge.models import DlqJob, FailedMessage
from factory_bridge.services import dlq

logger = logging.getLogger(__name__)

JOB_TASK = "factory_bridge.tasks.run_dlq_job"
# How long a job waits for another redrive or discard to finish (well within the cluster's
# task timeout) before it gives up and says so.
BUSY_WAIT_SECONDS = 60
SUCCESS, WARNING, ERROR = "success", "warning", "error"


def queue_job(*, action: str, rows: Sequence[FailedMessage], user_id: int | None) -> DlqJob:
    """Record the job and queue its task, both or neither (django-q2's queue is this database)."""
    from django_q.tasks import async_task

    with transaction.atomic():
        job = DlqJob.objects.create(action=action, requested_by_id=user_id)
        job.messages.set(rows)
        async_task(JOB_TASK, job.pk, task_name=f"dlq-{action}-{job.pk}")
    logger.info("dlq job=%s %s of %s message(s) queued", job.pk, action, len(rows))
    return job


def run_job(*, job_id: int) -> str:
    """Run a queued job once (a second delivery of its task finds it taken); return its status.

    Whatever happens, the job ends done or failed with an outcome staff can read, and each
    message's history says who asked and where the message stands now.
    """
    now = timezone.now()
    if not DlqJob.objects.filter(pk=job_id, status=DlqJob.Status.QUEUED).update(
        status=DlqJob.Status.RUNNING, started_at=now
    ):
        logger.warning("dlq job=%s not queued any more; left alone", job_id)
        return ""
    job = DlqJob.objects.get(pk=job_id)
    rows = list(job.messages.all())
    try:
        report = _operate(job, rows)
        level, outcome = (
            redrive_outcome(report=report)
            if isinstance(report, dlq.RedriveReport)
            else discard_outcome(report=report)
        )
        error = report.error
    except Exception as exc:
        # Staff would otherwise see the job running forever; the cluster logs the traceback.
        logger.exception("dlq job=%s failed", job_id)
        level, outcome, error = ERROR, f"{job.get_action_display()} failed: {exc}", str(exc)
    _log_history(job, rows, error)
    job.status = DlqJob.Status.FAILED if error else DlqJob.Status.DONE
    job.level, job.outcome, job.finished_at = level, outcome, timezone.now()
    job.save(update_fields=["status", "level", "outcome", "finished_at"])
    logger.info("dlq job=%s %s: %s", job_id, job.status, outcome)
    return str(job.status)


def _operate(job: DlqJob, rows: list[FailedMessage]) -> dlq.RedriveReport | dlq.DiscardReport:
    """Redrive or discard the rows, waiting while another operation holds the DLQ.

    Staff who click twice, or two staff at once, queue two jobs that the cluster may start
    together: the second waits its turn instead of failing.
    """
    deadline = monotonic() + BUSY_WAIT_SECONDS
    while True:
        if job.action == DlqJob.Action.REDRIVE:
            report: dlq.RedriveReport | dlq.DiscardReport = dlq.redrive_rows(rows)
        else:
            report = dlq.discard(rows=rows)
        if not report.busy or monotonic() >= deadline:
            return report
        sleep(1)


def redrive_outcome(*, report: dlq.RedriveReport) -> tuple[str, str]:
    """The admin message level and text of a redrive of chosen rows."""
    if report.error:
        return ERROR, f"Redrive stopped: {report.error}. {len(report.moved)} moved before that."
    summary = (
        f"Redriven: {len(report.moved)} moved, {len(report.failed)} failed, "
        f"{len(report.missing)} not found in the DLQ."
    )
    if report.skipped:
        summary += f" {report.skipped} skipped (not dead)."
    if report.missing and report.left.get("in_flight"):
        summary += f" The DLQ holds {dlq.held_elsewhere(report.left)}."
    return (ERROR if report.failed or report.missing else SUCCESS), summary


def discard_outcome(*, report: dlq.DiscardReport) -> tuple[str, str]:
    """The admin message level and text of a discard of chosen rows."""
    summary = f"Discarded {report.discarded} message(s); rows kept for audit."
    if report.skipped:
        summary += f" {report.skipped} skipped (not dead)."
    if report.missing:
        summary += (
            f" {len(report.missing)} not found or not deleted: they stay dead; "
            "try again in a minute."
        )
    if report.error:
        return ERROR, f"Discard stopped: {report.error}. {summary}"
    return (WARNING if report.missing else SUCCESS), summary


def _log_history(job: DlqJob, rows: list[FailedMessage], error: str) -> None:
    """Record in each message's history who asked, the job, and where the message stands now."""
    if job.requested_by_id is None:
        return
    now = dict(
        FailedMessage.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", "status")
    )
    for row in rows:
        row.status = now.get(row.pk, row.status)
        message = (
            f"{job.get_action_display()} from the admin (job {job.pk}); "
            f"now: {FailedMessage.Status(row.status).label}"
        )
        LogEntry.objects.log_actions(
            user_id=job.requested_by_id,
            queryset=[row],
            action_flag=CHANGE,
            change_message=f"{message} ({error})" if error else message,
            single_object=True,
        )
