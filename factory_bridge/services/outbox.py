"""The outbox relay: publish committed events to SNS, at least once, stock events first."""

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from time import monotonic, sleep

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from factory_bridge.models import OutboxEvent, WorkerLease
from factory_bridge.publishers import SNS_BATCH_SIZE, Message, PublishError, get_publisher

logger = logging.getLogger(__name__)

CLAIM_SIZE = 50
# A claimed event is hidden from other relays for this long; a relay that dies mid-publish
# leaves it to be published again after the lease (at least once).
LEASE = timedelta(seconds=30)
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


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0
    # Whether the relay stopped because nothing was due (rather than on its time budget).
    drained: bool = False

    def __str__(self) -> str:
        return f"published={self.published} failed={self.failed}"


def relay_outbox(*, seconds: float = RELAY_BUDGET_SECONDS) -> RelayReport:
    """Publish due events, oldest first, until none are left or `seconds` have passed."""
    report = RelayReport()
    publisher = get_publisher()
    deadline = monotonic() + seconds
    while monotonic() < deadline:
        batch = _claim(CLAIM_SIZE)
        if not batch:
            report.drained = True
            break
        # In claim order: stock events first.
        for topic in dict.fromkeys(event.topic for event in batch):
            events = [e for e in batch if e.topic == topic]
            # Marked after every SNS call, so a relay stopped midway re-sends little.
            for start in range(0, len(events), SNS_BATCH_SIZE):
                _publish(publisher, events[start : start + SNS_BATCH_SIZE], topic, report)
        if len(batch) < CLAIM_SIZE:
            report.drained = True
            break
    if report.published or report.failed:
        logger.info("outbox relay %s", report)
    return report


def relay_round(*, wait: int) -> int:
    """One round of the relay loop: publish what is due, or pause briefly when idle.

    Rounds are short so the loop's lease beats often: web processes read it to decide
    whether a commit needs a relay task of its own.
    """
    report = relay_outbox(seconds=RELAY_ROUND_SECONDS)
    if not report.published and not report.failed:
        sleep(RELAY_IDLE_SECONDS)
    elif report.drained and settings.OUTBOX_RELAY_LINGER > 0:
        # Events committed during the pause go out together, in full PublishBatch calls,
        # instead of one call per commit: a call costs nearly as much for one entry as for ten.
        sleep(settings.OUTBOX_RELAY_LINGER)
    return report.published


def _claim(size: int) -> list[OutboxEvent]:
    now = timezone.now()
    # Stock events first: a depletion waiting behind a backlog of sales events would keep a
    # product sold out for longer. Within a topic, oldest first.
    stock_first = Case(When(topic=OutboxEvent.Topic.STOCK, then=Value(0)), default=Value(1))
    with transaction.atomic():
        batch = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, next_attempt_at__lte=now)
            .order_by(stock_first, "created_at")[:size]
        )
        if batch:
            OutboxEvent.objects.filter(pk__in=[e.pk for e in batch]).update(
                next_attempt_at=now + LEASE
            )
    return batch


def _publish(publisher: object, events: list[OutboxEvent], topic: str, report: RelayReport) -> None:
    messages = [
        Message(id=e.pk.hex, subject=e.subject, body=e.body, attributes=e.attributes)
        for e in events
    ]
    try:
        outcomes = {o.id: o for o in publisher.publish(topic=topic, messages=messages)}  # type: ignore[attr-defined]
    except PublishError as exc:
        logger.warning("outbox publish failed topic=%s events=%s error=%s", topic, len(events), exc)
        outcomes, error = {}, str(exc)
    else:
        error = "no answer for this entry"
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
        failed.setdefault((event.attempts + 1, reason), []).append(event.pk)
    for (attempts, reason), pks in failed.items():
        delay = min(2**attempts, MAX_BACKOFF_SECONDS)
        OutboxEvent.objects.filter(pk__in=pks).update(
            attempts=attempts, last_error=reason, next_attempt_at=now + timedelta(seconds=delay)
        )
        report.failed += len(pks)


def backlog() -> dict:
    """Count and age in seconds of the oldest unpublished event."""
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {"pending": pending.count(), "oldest_age_seconds": round(age, 3)}


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
