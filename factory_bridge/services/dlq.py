"""Dead letters: why a message failed, what reaches the DLQ, and redriving or discarding it.

The watcher runs whenever the system is up; redrive and discard must still find every message.
So the watcher hides a message only while it records it and then shows it again at once, and
stands aside entirely while a redrive or discard holds the DLQ lease.
"""

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic, sleep

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.infrastructure import dead_letter_queues
from factory_bridge.messages import fingerprint, read_envelope
from factory_bridge.models import FailedMessage, MessageFailure
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services.restock.abandon import abandon
from inventory.events import STOCK_DEPLETED, STOCK_LOW
from nudged.core import leases
from nudged.core.logs import log_context

logger = logging.getLogger(__name__)

# The messages of the restock queue: each stands for a restock request.
RESTOCK_EVENTS = (STOCK_DEPLETED, STOCK_LOW)

# Held by a redrive or discard; the watcher receives nothing while it is.
DLQ_LEASE = "dlq-redrive"
# How long the watcher's receive hides a message if the watcher dies before showing it again.
WATCH_VISIBILITY = 5
# Pause between two sweeps of a DLQ that holds messages (all of them visible meanwhile).
WATCH_INTERVAL = 5
# A redrive stops looking when the DLQ has shown nothing new for this long.
REDRIVE_QUIET_SECONDS = 3
# How long a redrive or discard hides what it received; shown again at its end.
REDRIVE_HOLD = 60
# Upper bound of `redrive(limit=...)`; --all is for everything.
REDRIVE_MAX_LIMIT = 10000


class DlqBusy(Exception):
    """Another redrive or discard holds the DLQ."""


def watch_dlq(*, wait: int) -> int:
    """Record what the DLQs hold; return how many messages were new or dead again.

    One sweep of each DLQ receives until it shows nothing new (holding what it read, so that
    the next receive reaches further), records each message, and shows them all again at once.
    The long poll is spread over the DLQs.
    """
    if leases.is_held(DLQ_LEASE):
        sleep(1)
        return 0
    pairs = dead_letter_queues()
    seen = changed = 0
    for source, dlq_name in pairs.items():
        held, new = _sweep(SqsQueue(dlq_name), source, max(1, wait // len(pairs)))
        seen += held
        changed += new
    if seen:
        sleep(WATCH_INTERVAL)
    return changed


def _sweep(dlq: SqsQueue, source: str, wait: int) -> tuple[int, int]:
    """Record one DLQ's messages; return how many it showed and how many changed."""
    held: dict[str, ReceivedMessage] = {}
    changed = 0
    try:
        batch = dlq.receive(wait=wait, visibility=WATCH_VISIBILITY)
        while batch:
            new = [m for m in batch if m.message_id not in held]
            held |= {m.message_id: m for m in batch}
            changed += sum(_record_one(message, source, dlq.name) for message in new)
            if not new or leases.is_held(DLQ_LEASE):
                break
            batch = dlq.receive(visibility=WATCH_VISIBILITY)
    finally:
        _release(dlq, list(held.values()))
    return len(held), changed


def _record_one(message: ReceivedMessage, source: str, dlq: str) -> bool:
    # However malformed a message is, the others in the sweep are still recorded.
    with log_context(sqs_message=message.message_id):
        try:
            return record_dead(message, source=source, dlq=dlq)
        except Exception:
            logger.exception("could not record dead message=%s", message.message_id)
            return False


def record_dead(message: ReceivedMessage, *, source: str = "", dlq: str = "") -> bool:
    """Create or refresh the FailedMessage row for a message seen in a DLQ; True if changed.

    `source` and `dlq` name the queues (the restock queue's unless given).
    """
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
        row.sqs_message_id = message.message_id[:100]
        row.source_queue = source or settings.SQS_RESTOCK_QUEUE
        row.dlq = dlq or settings.SQS_RESTOCK_DLQ
        row.body = message.body
        row.attributes = message.attributes
        row.message_attributes = message.message_attributes
        row.receive_count = max(message.receive_count, row.receive_count or 0)
        row.last_error = failure or row.last_error or "no processing error recorded"
        row.last_seen_at = now
        row.save()
    if changed:
        logger.warning(
            "dead message=%s sku=%r type=%r error=%s",
            message.message_id,
            row.sku or "-",
            row.event_type or "-",
            row.last_error[:200],
        )
    return changed


def _describe(body: str) -> dict:
    try:
        envelope = read_envelope(body)
    except UnreadableMessage:
        return {"event_type": "", "sku": ""}
    return {"event_type": envelope.event_type[:32], "sku": envelope.sku[:32]}


@contextmanager
def _dlq_lease() -> Iterator[str]:
    """Hold the DLQ for one redrive or discard; the watcher stands aside meanwhile."""
    owner = uuid.uuid4().hex
    if not leases.claim(DLQ_LEASE, owner):
        raise DlqBusy("another redrive or discard is running; try again when it has finished")
    try:
        yield owner
    finally:
        leases.release(DLQ_LEASE, owner)


def _release(dlq: SqsQueue, messages: list[ReceivedMessage]) -> None:
    """Make held messages visible again at once (else they hide for the whole hold)."""
    if not messages:
        return
    try:
        failed = dlq.change_visibility_batch(messages, 0)
    except QueueError as exc:
        logger.warning("could not release %s message(s): %s", len(messages), exc)
        return
    for message_id in failed:
        logger.warning("could not release message=%s", message_id)


Named = tuple[ReceivedMessage, set[str]]


class _Sweep:
    """One pass of a redrive or discard over a DLQ.

    Each message is received once and hidden while the pass runs, with its names (its DLQ
    message id and its fingerprint). What the pass has not taken out of the DLQ (`gone`) is
    shown again when it ends, however it ends. `once_per_body`: a message whose body the pass
    already had (one it redrove that failed again at once, under a new id) is held for the
    next pass instead; else an unreadable message would go round for as long as consumers run.
    """

    def __init__(
        self, dlq: SqsQueue, *, owner: str, quiet_seconds: float, once_per_body: bool = False
    ) -> None:
        self.dlq, self.owner, self.quiet_seconds = dlq, owner, quiet_seconds
        self.once_per_body = once_per_body
        self.seen: set[str] = set()  # the names of every message received
        self._ids: set[str] = set()
        self._held: dict[str, ReceivedMessage] = {}

    def __enter__(self) -> "_Sweep":
        return self

    def __exit__(self, *exc: object) -> None:
        _release(self.dlq, list(self._held.values()))

    def batches(self, done: Callable[[], bool]) -> Iterator[list[Named]]:
        """New messages, a batch at a time, until `done()` or nothing new for quiet_seconds."""
        quiet_since = monotonic()
        while monotonic() - quiet_since < self.quiet_seconds and not done():
            leases.renew(DLQ_LEASE, self.owner)
            named = []
            for message in self.dlq.receive(wait=1, visibility=REDRIVE_HOLD):
                if message.message_id in self._ids:
                    continue
                self._ids.add(message.message_id)
                self._held[message.message_id] = message
                names = {message.message_id, fingerprint(message.body)}
                if not (self.once_per_body and names & self.seen):
                    named.append((message, names))
                self.seen |= names
            if not named:
                continue
            quiet_since = monotonic()
            yield named

    def gone(self, messages: Iterable[ReceivedMessage]) -> None:
        """These left the DLQ (sent on, or deleted): nothing to show again."""
        for message in messages:
            self._held.pop(message.message_id, None)


@dataclass
class RedriveReport:
    moved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    listed: list[FailedMessage] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # Rows chosen that were not dead (already redriven or discarded).
    skipped: int = 0
    # The DLQs' counts (summed) once the redrive was over.
    left: dict[str, int] = field(default_factory=dict)
    # Per (source queue, DLQ) searched: how many moved (or would, on a dry run) and how many
    # the DLQ held afterwards.
    by_queue: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    error: str = ""
    # Another redrive or discard held the DLQ: nothing was tried.
    busy: bool = False

    def stuck(self) -> str:
        """Why nothing moved although the DLQ holds messages; empty when that is not so."""
        if self.moved or self.listed or self.failed or self.error or not sum(self.left.values()):
            return ""
        return f"the DLQ holds {held_elsewhere(self.left)}"


def held_elsewhere(counts: dict[str, int]) -> str:
    """Say what the DLQ holds that a redrive could not receive, and what to do."""
    return (
        f"{sum(counts.values())} message(s), {counts.get('in_flight', 0)} of them in flight: "
        f"something else is holding them (a redrive or discard that stopped midway hides its "
        f"messages for up to {REDRIVE_HOLD} s); run again in a minute"
    )


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def _pairs_of(rows: list[FailedMessage]) -> list[tuple[str, str]]:
    """The (source queue, DLQ) pairs these rows died in, in the order of dead_letter_queues()."""
    known = list(dead_letter_queues().items())
    pairs = {(row.source_queue, row.dlq) for row in rows}
    return [pair for pair in known if pair in pairs] + sorted(pairs - set(known))


def _pairs_for(message_ids: set[str]) -> list[tuple[str, str]]:
    """Where to look for these messages: their rows' DLQs, or every DLQ for one without a row."""
    if not message_ids:
        return list(dead_letter_queues().items())
    rows = list(
        FailedMessage.objects.filter(fingerprint__in=message_ids)
        | FailedMessage.objects.filter(sqs_message_id__in=message_ids)
    )
    named = {row.fingerprint for row in rows} | {row.sqs_message_id for row in rows}
    if message_ids - named:
        return list(dead_letter_queues().items())
    return _pairs_of(rows)


def redrive(
    *,
    message_ids: list[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    quiet_seconds: float = REDRIVE_QUIET_SECONDS,
) -> RedriveReport:
    """Move dead messages back to their source queues: send first, delete from the DLQ second.

    Every DLQ is searched in turn (each back to its own source queue); messages named by DLQ
    message id or fingerprint are looked for only in the DLQ their row names, if they have one.
    A crash between send and delete leaves the message in both queues (a duplicate the
    consumer absorbs), never in neither. When SQS fails midway the report keeps what was moved
    before, with `error` set.
    """
    wanted = set(message_ids or [])
    return _redrive(
        _pairs_for(wanted), wanted=wanted, limit=limit, dry_run=dry_run, quiet_seconds=quiet_seconds
    )


def _redrive(
    pairs: list[tuple[str, str]],
    *,
    wanted: set[str],
    limit: int | None = None,
    dry_run: bool = False,
    quiet_seconds: float = REDRIVE_QUIET_SECONDS,
) -> RedriveReport:
    report = RedriveReport()
    found: set[str] = set()
    try:
        with _dlq_lease() as owner:
            for source_name, dlq_name in pairs:
                if limit is not None and len(report.moved) + len(report.listed) >= limit:
                    break
                if wanted and wanted <= found:
                    break
                before = len(report.moved) + len(report.listed)
                dlq = SqsQueue(dlq_name)
                found |= _redrive_pair(
                    dlq,
                    SqsQueue(source_name),
                    owner=owner,
                    wanted=wanted,
                    limit=limit,
                    dry_run=dry_run,
                    quiet_seconds=quiet_seconds,
                    report=report,
                )
                counts = dlq.counts()
                _add_counts(report.left, counts)
                moved = len(report.moved) + len(report.listed) - before
                report.by_queue[source_name, dlq_name] = (moved, sum(counts.values()))
    except DlqBusy as exc:
        report.error = str(exc)
        report.busy = True
    except QueueError as exc:
        report.error = str(exc)
        logger.error("redrive stopped after %s moved: %s", len(report.moved), exc)
    if wanted and not report.error:
        report.missing = sorted(wanted - found)
    return report


def _redrive_pair(
    dlq: SqsQueue,
    source: SqsQueue,
    *,
    owner: str,
    wanted: set[str],
    limit: int | None,
    dry_run: bool,
    quiet_seconds: float,
    report: RedriveReport,
) -> set[str]:
    """Redrive one DLQ into its source queue; return the names (ids, fingerprints) it showed."""

    def done() -> bool:
        full = limit is not None and len(report.moved) + len(report.listed) >= limit
        return full or bool(wanted and wanted <= sweep.seen)

    with _Sweep(dlq, owner=owner, quiet_seconds=quiet_seconds, once_per_body=True) as sweep:
        for batch in sweep.batches(done):
            chosen = [m for m, names in batch if not wanted or names & wanted]
            if limit is not None:
                chosen = chosen[: limit - len(report.moved) - len(report.listed)]
            for message in chosen:
                record_dead(message, source=source.name, dlq=dlq.name)
            if dry_run:
                report.listed += list(
                    FailedMessage.objects.filter(sqs_message_id__in=[m.message_id for m in chosen])
                )
                continue
            sweep.gone(_move(chosen, source, dlq, report))
    return sweep.seen


def _move(
    messages: list[ReceivedMessage], source: SqsQueue, dlq: SqsQueue, report: RedriveReport
) -> list[ReceivedMessage]:
    """Send, then delete from the DLQ; return the messages sent."""
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
        logger.info(
            "redriven message=%s to %s as %s",
            message.message_id,
            source.name,
            sent[message.message_id],
        )
    # Deleted only now: a failure from here on leaves a duplicate in the DLQ, not a loss.
    for message_id in dlq.delete_batch(moved):
        logger.warning("redrive: message=%s sent but still in the DLQ", message_id)
    return moved


def redrive_rows(rows: list[FailedMessage]) -> RedriveReport:
    """Redrive the DLQ messages behind these rows, each from its own DLQ (admin action)."""
    dead = [row for row in rows if row.status == FailedMessage.Status.DEAD]
    # By fingerprint: a message that died again since the row was written has a new id.
    ids = {row.fingerprint for row in dead}
    report = _redrive(_pairs_of(dead), wanted=ids) if ids else RedriveReport()
    report.skipped = len(rows) - len(dead)
    return report


@dataclass
class DiscardReport:
    discarded: int = 0
    # Fingerprints of dead rows whose message was not found while something else held some.
    missing: list[str] = field(default_factory=list)
    # Rows chosen that were not dead (already redriven or discarded).
    skipped: int = 0
    error: str = ""
    # Another redrive or discard held the DLQ: nothing was tried.
    busy: bool = False


@dataclass
class _DiscardPass:
    """What one DLQ's discard saw and deleted (message ids and fingerprints)."""

    deleted: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    in_flight: int = 0


def discard(*, rows: list[FailedMessage]) -> DiscardReport:
    """Delete the messages from their DLQs and keep the rows, marked discarded, for audit.

    A discarded depletion will never be restocked, so its product's depletion ends: the next
    order that finds the product empty reports a new one.
    """
    dead = [row for row in rows if row.status == FailedMessage.Status.DEAD]
    report = DiscardReport(skipped=len(rows) - len(dead))
    if not dead:
        return report
    names = {row.pk: {row.sqs_message_id, row.fingerprint} for row in dead}
    by_dlq: dict[str, list[FailedMessage]] = {}
    for row in dead:
        by_dlq.setdefault(row.dlq, []).append(row)
    passes: dict[str, _DiscardPass] = {}
    try:
        with _dlq_lease() as owner:
            for dlq_name, dlq_rows in by_dlq.items():
                passes[dlq_name] = _DiscardPass()
                _discard_from(
                    SqsQueue(dlq_name),
                    [names[row.pk] for row in dlq_rows],
                    owner=owner,
                    result=passes[dlq_name],
                )
    except DlqBusy as exc:
        report.error = str(exc)
        report.busy = True
        return report
    except QueueError as exc:
        report.error = str(exc)
        logger.error("discard stopped: %s", exc)
    gone = []
    for dlq_name, dlq_rows in by_dlq.items():
        result = passes.get(dlq_name)
        if result is None:
            continue
        # A row whose message is no longer in the DLQ is discarded too (nothing is left to
        # keep), unless something else may be hiding it.
        nothing_hidden = not report.error and not result.in_flight
        gone += [
            row
            for row in dlq_rows
            if names[row.pk] & result.deleted
            or (nothing_hidden and not names[row.pk] & result.seen)
        ]
    report.missing = sorted(row.fingerprint for row in dead if row not in gone)
    report.discarded = FailedMessage.objects.filter(pk__in=[row.pk for row in gone]).update(
        status=FailedMessage.Status.DISCARDED, discarded_at=timezone.now()
    )
    for row in gone:
        if row.event_type in RESTOCK_EVENTS:
            abandon(body=row.body)
        logger.info("discarded message=%s sku=%r", row.sqs_message_id, row.sku or "-")
    return report


def _discard_from(
    dlq: SqsQueue, names: list[set[str]], *, owner: str, result: _DiscardPass
) -> None:
    """Delete from one DLQ the messages named (each by its id and fingerprint)."""
    wanted = set().union(*names)
    with _Sweep(dlq, owner=owner, quiet_seconds=REDRIVE_QUIET_SECONDS) as sweep:
        result.seen = sweep.seen
        for batch in sweep.batches(lambda: all(aliases & sweep.seen for aliases in names)):
            chosen = [(m, aliases) for m, aliases in batch if aliases & wanted]
            failed = dlq.delete_batch([m for m, _ in chosen]) if chosen else set()
            deleted = [(m, aliases) for m, aliases in chosen if m.message_id not in failed]
            sweep.gone(m for m, _ in deleted)
            for _, aliases in deleted:
                result.deleted |= aliases
    result.in_flight = dlq.counts().get("in_flight", 0)


def dead_count() -> int:
    return FailedMessage.objects.filter(status=FailedMessage.Status.DEAD).count()
