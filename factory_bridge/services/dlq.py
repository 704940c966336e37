"""Dead letters: record what reaches the DLQ, redrive it to the source queue, or discard it."""

import logging
from dataclasses import dataclass, field
from time import monotonic, sleep

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.messages import fingerprint, read_envelope
from factory_bridge.models import FailedMessage, MessageFailure, RestockRequest
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue

logger = logging.getLogger(__name__)

# The watcher hides what it has read only briefly, so that a redrive can receive it soon.
WATCH_VISIBILITY = 5
# A redrive stops looking when the DLQ has shown nothing new for this long.
REDRIVE_QUIET_SECONDS = WATCH_VISIBILITY + 2


def watch_dlq(*, wait: int) -> int:
    """Record one batch of dead messages; return how many were new or changed."""
    dlq = SqsQueue(settings.SQS_RESTOCK_DLQ)
    messages = dlq.receive(wait=wait, visibility=WATCH_VISIBILITY)
    changed = sum(record_dead(message) for message in messages)
    if messages and not changed:
        # Everything seen is already recorded: do not spin over the same messages.
        sleep(WATCH_VISIBILITY)
    return changed


def record_dead(message: ReceivedMessage) -> bool:
    """Create or refresh the FailedMessage row for a message seen in the DLQ; True if changed."""
    key = fingerprint(message.body)
    now = timezone.now()
    failure = MessageFailure.objects.filter(fingerprint=key).values_list("error", flat=True).first()
    with transaction.atomic():
        row = FailedMessage.objects.select_for_update().filter(fingerprint=key).first()
        if row is None:
            row = FailedMessage(fingerprint=key, first_seen_at=now, **_describe(message.body))
            changed = True
        else:
            changed = (
                row.status != FailedMessage.Status.DEAD or row.sqs_message_id != message.message_id
            )
            if row.status != FailedMessage.Status.DEAD:
                # A redriven message died again: same row, one more death.
                row.times_dead = F("times_dead") + 1
                row.status = FailedMessage.Status.DEAD
        row.sqs_message_id = message.message_id
        row.source_queue = settings.SQS_RESTOCK_QUEUE
        row.dlq = settings.SQS_RESTOCK_DLQ
        row.body = message.body
        row.attributes = message.attributes
        row.message_attributes = message.message_attributes
        row.receive_count = max(message.receive_count, row.receive_count or 0)
        row.last_error = failure or row.last_error or "no processing error recorded"
        row.last_seen_at = now
        row.save()
        if changed and row.event_type == "stock.depleted":
            _fail_pending_restock(message.body)
    if changed:
        logger.warning(
            "dead message=%s sku=%s type=%s error=%s",
            message.message_id,
            row.sku or "-",
            row.event_type or "-",
            row.last_error,
        )
    return changed


def _describe(body: str) -> dict:
    try:
        envelope = read_envelope(body)
    except UnreadableMessage:
        return {"event_type": "", "sku": ""}
    return {"event_type": envelope.event_type[:32], "sku": envelope.sku[:32]}


def _fail_pending_restock(body: str) -> None:
    try:
        event_id = read_envelope(body).event_id
    except UnreadableMessage:
        return
    RestockRequest.objects.filter(
        depletion_key=event_id, status=RestockRequest.Status.PENDING
    ).update(status=RestockRequest.Status.FAILED, updated_at=timezone.now())


@dataclass
class RedriveReport:
    moved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    listed: list[FailedMessage] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""


def redrive(
    *,
    message_ids: list[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    quiet_seconds: float = REDRIVE_QUIET_SECONDS,
) -> RedriveReport:
    """Move dead messages back to the source queue: send first, delete from the DLQ second.

    A crash between the two leaves the message in both queues (a duplicate the consumer
    absorbs), never in neither. Messages are named by DLQ message id or by fingerprint. When
    SQS fails midway the report keeps what was moved before, with `error` set.
    """
    wanted = set(message_ids or [])
    dlq = SqsQueue(settings.SQS_RESTOCK_DLQ)
    source = SqsQueue(settings.SQS_RESTOCK_QUEUE)
    report = RedriveReport()
    seen: set[str] = set()
    found: set[str] = set()
    held: list[ReceivedMessage] = []
    quiet_since = monotonic()
    try:
        while monotonic() - quiet_since < quiet_seconds:
            if limit is not None and len(report.moved) + len(report.listed) >= limit:
                break
            if wanted and wanted <= found:
                break
            batch = [m for m in dlq.receive(wait=1, visibility=60) if m.message_id not in seen]
            if not batch:
                continue
            quiet_since = monotonic()
            seen |= {m.message_id for m in batch}
            names = {m.message_id: {m.message_id, fingerprint(m.body)} for m in batch}
            for aliases in names.values():
                found |= aliases
            chosen = [m for m in batch if not wanted or names[m.message_id] & wanted]
            if limit is not None:
                chosen = chosen[: limit - len(report.moved) - len(report.listed)]
            held += [m for m in batch if m not in chosen]
            for message in chosen:
                record_dead(message)
            if dry_run:
                report.listed += list(
                    FailedMessage.objects.filter(sqs_message_id__in=[m.message_id for m in chosen])
                )
                held += chosen
                continue
            held += _move(chosen, source, dlq, report)
    except QueueError as exc:
        report.error = str(exc)
        logger.error("redrive stopped after %s moved: %s", len(report.moved), exc)
    finally:
        _release(dlq, held)
    if wanted and not report.error:
        report.missing = sorted(wanted - found)
    return report


def _release(dlq: SqsQueue, messages: list[ReceivedMessage]) -> None:
    """Make held messages visible again at once (else they hide for the whole hold)."""
    for message in messages:
        try:
            dlq.change_visibility(message, 0)
        except QueueError as exc:
            logger.warning("could not release message=%s: %s", message.message_id, exc)


def _move(
    messages: list[ReceivedMessage], source: SqsQueue, dlq: SqsQueue, report: RedriveReport
) -> list[ReceivedMessage]:
    """Send, then delete from the DLQ; return the messages that could not be sent."""
    if not messages:
        return []
    sent = source.send_batch([(m.message_id, m.body, m.message_attributes) for m in messages])
    unsent = [m for m in messages if m.message_id not in sent]
    for message in unsent:
        report.failed.append(message.message_id)
        logger.error("redrive: could not send message=%s to %s", message.message_id, source.name)
    moved = [m for m in messages if m.message_id in sent]
    FailedMessage.objects.filter(sqs_message_id__in=[m.message_id for m in moved]).update(
        status=FailedMessage.Status.REDRIVEN, redriven_at=timezone.now()
    )
    for message in moved:
        report.moved.append(message.message_id)
        logger.info("redriven message=%s as %s", message.message_id, sent[message.message_id])
    # Deleted only now: a failure from here on leaves a duplicate in the DLQ, not a loss.
    for message_id in dlq.delete_batch(moved):
        logger.warning("redrive: message=%s sent but still in the DLQ", message_id)
    return unsent


def redrive_rows(rows: list[FailedMessage]) -> RedriveReport:
    """Redrive the DLQ messages behind these rows (admin action)."""
    # By fingerprint: a message that died again since the row was written has a new id.
    ids = [row.fingerprint for row in rows if row.status == FailedMessage.Status.DEAD]
    if not ids:
        return RedriveReport()
    return redrive(message_ids=ids)


def discard(*, rows: list[FailedMessage]) -> int:
    """Delete the messages from the DLQ and keep the rows, marked discarded, for audit."""
    dead = [row for row in rows if row.status == FailedMessage.Status.DEAD]
    if not dead:
        return 0
    dlq = SqsQueue(settings.SQS_RESTOCK_DLQ)
    wanted = {row.sqs_message_id for row in dead}
    deleted: list[str] = []
    seen: set[str] = set()
    held: list[ReceivedMessage] = []
    quiet_since = monotonic()
    try:
        while wanted - seen and monotonic() - quiet_since < REDRIVE_QUIET_SECONDS:
            batch = [m for m in dlq.receive(wait=1, visibility=60) if m.message_id not in seen]
            if not batch:
                continue
            quiet_since = monotonic()
            seen |= {m.message_id for m in batch}
            chosen = [m for m in batch if m.message_id in wanted]
            held += [m for m in batch if m.message_id not in wanted]
            failed = dlq.delete_batch(chosen) if chosen else set()
            deleted += [m.message_id for m in chosen if m.message_id not in failed]
    finally:
        _release(dlq, held)
    now = timezone.now()
    # A row whose message is no longer in the DLQ is discarded too: nothing is left to keep.
    gone = [
        row.pk for row in dead if row.sqs_message_id in deleted or row.sqs_message_id not in seen
    ]
    return FailedMessage.objects.filter(pk__in=gone).update(
        status=FailedMessage.Status.DISCARDED, discarded_at=now
    )


def dead_count() -> int:
    return FailedMessage.objects.filter(status=FailedMessage.Status.DEAD).count()
