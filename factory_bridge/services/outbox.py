"""The outbox relay: publish committed events to SNS, at least once, stock events first."""

import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic, sleep

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from factory_bridge.models import OutboxEvent, WorkerLease
from factory_bridge.publishers import (
    SNS_BATCH_SIZE,
    Message,
    Publisher,
    PublishError,
    get_publisher,
)

logger = logging.getLogger(__name__)

CLAIM_SIZE = 50
# What the relay allows for one database write around a publish call (the claim before it,
# recording its outcome after it).
WRITE_SECONDS = 5.0
# One relay call stops after this long, well inside the cluster's task timeout.
RELAY_BUDGET_SECONDS = 20.0
# One round of the relay loop, between two beats of its lease.
RELAY_ROUND_SECONDS = 2.0
# The relay loop's pause when the outbox is empty.
RELAY_IDLE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 300
RELAY_TASK = "factory_bridge.tasks.relay_outbox"
RELAY_LOOP = "outbox"
# The relay loop counts as running when it beat within this many seconds.
RELAY_LOOP_FRESH_SECONDS = 5.0
PURGE_BATCH_SIZE = 1000


def claim_lease(publisher: Publisher) -> timedelta:
    """How long claimed events stay hidden from other relays.

    It covers the publisher's slowest call (every attempt waiting out its timeouts) and the
    writes around it; the relay starts a call only while that much of the lease is left and
    hands the rest back, so no second relay takes an event the first is still sending. A relay
    that dies mid-publish leaves its events to be published again after the lease.
    """
    return timedelta(seconds=publisher.max_publish_seconds + 2 * WRITE_SECONDS)


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0
    dead: int = 0
    # Whether the relay stopped because nothing was due (rather than on its time budget).
    drained: bool = False

    def __str__(self) -> str:
        return f"published={self.published} failed={self.failed} dead={self.dead}"


@dataclass
class _Claim:
    events: list[OutboxEvent]
    # The next_attempt_at the claim wrote: the events are this relay's until then.
    until: datetime
    # The same moment on this process's monotonic clock.
    expires: float


def relay_outbox(*, seconds: float = RELAY_BUDGET_SECONDS) -> RelayReport:
    """Publish due events, oldest first, until none are left or `seconds` have passed."""
    report = RelayReport()
    publisher = get_publisher()
    lease = claim_lease(publisher)
    deadline = monotonic() + seconds
    while monotonic() < deadline:
        claim = _claim(CLAIM_SIZE, lease)
        if not claim.events:
            report.drained = True
            break
        handed_back = _publish_claim(publisher, claim, report)
        if len(claim.events) < CLAIM_SIZE and not handed_back:
            report.drained = True
            break
    if report.published or report.failed or report.dead:
        logger.info("outbox relay %s", report)
    return report


def relay_round(*, wait: int) -> int:
    """One round of the relay loop: publish what is due, or pause briefly when idle.

    Rounds are short so the loop's lease beats often: web processes read it to decide
    whether a commit needs a relay task of its own.
    """
    report = relay_outbox(seconds=RELAY_ROUND_SECONDS)
    if not (report.published or report.failed or report.dead):
        sleep(RELAY_IDLE_SECONDS)
    elif report.drained and settings.OUTBOX_RELAY_LINGER > 0:
        # Events committed during the pause go out together, in full PublishBatch calls,
        # instead of one call per commit: a call costs nearly as much for one entry as for ten.
        sleep(settings.OUTBOX_RELAY_LINGER)
    return report.published


def _claim(size: int, lease: timedelta) -> _Claim:
    started = monotonic()
    now = timezone.now()
    # Stock events first: a depletion waiting behind a backlog of sales events would keep a
    # product sold out for longer. Within a topic, oldest first.
    stock_first = Case(When(topic=OutboxEvent.Topic.STOCK, then=Value(0)), default=Value(1))
    with transaction.atomic():
        batch = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, dead_at__isnull=True, next_attempt_at__lte=now)
            .order_by(stock_first, "created_at")[:size]
        )
        if batch:
            OutboxEvent.objects.filter(pk__in=[e.pk for e in batch]).update(
                next_attempt_at=now + lease
            )
    return _Claim(events=batch, until=now + lease, expires=started + lease.total_seconds())


def _publish_claim(publisher: Publisher, claim: _Claim, report: RelayReport) -> bool:
    """Publish a claim, one SNS call per chunk; return whether some events were handed back."""
    # In claim order: stock events first. Marked after every call, so a relay stopped midway
    # re-sends little.
    todo: deque[list[OutboxEvent]] = deque()
    for topic in dict.fromkeys(event.topic for event in claim.events):
        events = [e for e in claim.events if e.topic == topic]
        todo.extend(
            events[start : start + SNS_BATCH_SIZE]
            for start in range(0, len(events), SNS_BATCH_SIZE)
        )
    while todo:
        if monotonic() + publisher.max_publish_seconds + WRITE_SECONDS > claim.expires:
            _hand_back([e.pk for chunk in todo for e in chunk], claim.until)
            return True
        chunk = todo.popleft()
        if not _publish(publisher, chunk, report):
            # SNS refused the whole call: one message in it is bad. Sent one by one, the
            # others go out and only the bad one counts a failure.
            todo.extendleft([e] for e in reversed(chunk))
    return False


def _hand_back(pks: list[uuid.UUID], until: datetime) -> None:
    """Make claimed events due again now, unless the lease ran out and another relay took them."""
    OutboxEvent.objects.filter(pk__in=pks, next_attempt_at=until).update(
        next_attempt_at=timezone.now()
    )


def _publish(publisher: Publisher, events: list[OutboxEvent], report: RelayReport) -> bool:
    """Publish one chunk and record each event's outcome.

    Returns False, recording nothing, when SNS refused a chunk of several events as a whole.
    """
    messages = [
        Message(id=e.pk.hex, subject=e.subject, body=e.body, attributes=e.attributes)
        for e in events
    ]
    try:
        outcomes = {o.id: o for o in publisher.publish(topic=events[0].topic, messages=messages)}
    except PublishError as exc:
        if exc.rejected and len(events) > 1:
            return False
        logger.warning(
            "outbox publish failed topic=%s events=%s error=%s", events[0].topic, len(events), exc
        )
        outcomes, error, rejected = {}, str(exc), exc.rejected
    else:
        error, rejected = "no answer for this entry", False
    now = timezone.now()
    done = [e.pk for e in events if e.pk.hex in outcomes and outcomes[e.pk.hex].ok]
    if done:
        OutboxEvent.objects.filter(pk__in=done).update(
            published_at=now, attempts=F("attempts") + 1, last_error=""
        )
        report.published += len(done)
    # Failed events back off by their own attempt count: 2, 4, 8 ... MAX_BACKOFF_SECONDS.
    failed: dict[tuple[int, str], list] = {}
    for event in events:
        if event.pk in done:
            continue
        outcome = outcomes.get(event.pk.hex)
        reason = (outcome.error if outcome else error)[:2000]
        attempts = event.attempts + 1
        if (outcome.rejected if outcome else rejected) and attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            _bury(event, attempts=attempts, reason=reason, now=now)
            report.dead += 1
            continue
        failed.setdefault((attempts, reason), []).append(event.pk)
    for (attempts, reason), pks in failed.items():
        delay = min(2**attempts, MAX_BACKOFF_SECONDS)
        OutboxEvent.objects.filter(pk__in=pks).update(
            attempts=attempts, last_error=reason, next_attempt_at=now + timedelta(seconds=delay)
        )
        report.failed += len(pks)
    return True


def _bury(event: OutboxEvent, *, attempts: int, reason: str, now: datetime) -> None:
    OutboxEvent.objects.filter(pk=event.pk).update(
        attempts=attempts, last_error=reason, dead_at=now, next_attempt_at=now
    )
    logger.error(
        "outbox event dead id=%s type=%s sku=%s attempts=%s error=%.500s",
        event.pk,
        event.event_type,
        event.sku,
        attempts,
        reason,
    )


def retry_dead(*, ids: Iterable[uuid.UUID]) -> list[OutboxEvent]:
    """Give the dead events among `ids` a fresh set of attempts, due now; return them."""
    with transaction.atomic():
        revived = list(
            OutboxEvent.objects.select_for_update().filter(pk__in=list(ids), dead_at__isnull=False)
        )
        OutboxEvent.objects.filter(pk__in=[e.pk for e in revived]).update(
            dead_at=None, attempts=0, next_attempt_at=timezone.now()
        )
    if revived:
        logger.info("outbox dead events retried ids=%s", ",".join(str(e.pk) for e in revived))
        trigger_relay()
    return revived


def purge_published(*, days: int | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete events published more than `days` ago, in short batches; return how many.

    Each batch is its own statement, so the purge never holds locks the relay or orders wait
    on for long. Unpublished and dead events are kept whatever their age.
    """
    cutoff = timezone.now() - timedelta(
        days=settings.OUTBOX_RETENTION_DAYS if days is None else days
    )
    old = OutboxEvent.objects.filter(published_at__lt=cutoff).order_by("published_at")
    deleted = 0
    while pks := list(old.values_list("pk", flat=True)[:batch_size]):
        deleted += OutboxEvent.objects.filter(pk__in=pks).delete()[0]
        if len(pks) < batch_size:
            break
    if deleted:
        logger.info("outbox purged published events=%s before=%s", deleted, cutoff.isoformat())
    return deleted


def backlog() -> dict:
    """Events waiting to be published, the age in seconds of the oldest, and dead events."""
    unpublished = OutboxEvent.objects.filter(published_at__isnull=True)
    pending = unpublished.filter(dead_at__isnull=True)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {
        "pending": pending.count(),
        "oldest_age_seconds": round(age, 3),
        "dead": unpublished.filter(dead_at__isnull=False).count(),
    }


class _Debouncer:
    """Coalesce the commits of a burst into one relay task per web process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def pull(self, delay: float) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        # Cleared before enqueuing: a commit after this point starts a new timer, and every
        # commit before it is visible to the task enqueued below.
        with self._lock:
            self._timer = None
        try:
            _enqueue()
        except Exception:
            logger.exception("could not enqueue the outbox relay; the sweep will publish")
        finally:
            # The timer's thread dies here; its database connection must not outlive it.
            connections.close_all()


_debouncer = _Debouncer()


def _enqueue() -> None:
    from django_q.tasks import async_task

    async_task(RELAY_TASK, task_name="relay_outbox", q_options={"save": False})


def trigger_relay() -> None:
    """Ask the cluster to publish soon, unless its relay loop is running; never raises."""
    if _loop_alive():
        return
    delay = settings.OUTBOX_RELAY_DEBOUNCE
    if delay > 0:
        _debouncer.pull(delay)
        return
    try:
        _enqueue()
    except Exception:
        logger.exception("could not enqueue the outbox relay; the sweep will publish")


_loop_seen_until = 0.0


def _loop_alive() -> bool:
    """Whether the relay loop beat recently; asked of the database at most every few seconds."""
    global _loop_seen_until
    if monotonic() < _loop_seen_until:
        return True
    cutoff = timezone.now() - timedelta(seconds=RELAY_LOOP_FRESH_SECONDS)
    try:
        alive = WorkerLease.objects.filter(name=RELAY_LOOP, heartbeat_at__gte=cutoff).exists()
    except Exception:
        logger.exception("could not read the relay loop's lease")
        return False
    if alive:
        _loop_seen_until = monotonic() + RELAY_LOOP_FRESH_SECONDS
    return alive
