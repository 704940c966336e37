"""The outbox relay: publish committed events to SNS, at least once, in order of creation."""

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from factory_bridge.models import OutboxEvent
from factory_bridge.publishers import Message, PublishError, get_publisher

logger = logging.getLogger(__name__)

CLAIM_SIZE = 100
# A claimed event is hidden from other relays for this long; a relay that dies mid-publish
# leaves it to be published again after the lease (at least once).
LEASE = timedelta(seconds=30)
MAX_BACKOFF_SECONDS = 300
RELAY_TASK = "factory_bridge.tasks.relay_outbox"


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"published={self.published} failed={self.failed}"


def relay_outbox(*, max_events: int = 5000) -> RelayReport:
    """Publish due events until none are left (or max_events were tried)."""
    report = RelayReport()
    publisher = get_publisher()
    while report.published + report.failed < max_events:
        batch = _claim(CLAIM_SIZE)
        if not batch:
            break
        for topic in {event.topic for event in batch}:
            _publish(publisher, [e for e in batch if e.topic == topic], topic, report)
    if report.published or report.failed:
        logger.info("outbox relay %s", report)
    return report


def _claim(size: int) -> list[OutboxEvent]:
    now = timezone.now()
    with transaction.atomic():
        batch = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, next_attempt_at__lte=now)
            .order_by("created_at")[:size]
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
        outcomes = {}
        error = str(exc)
    else:
        error = "no answer for this entry"
    now = timezone.now()
    for event in events:
        event.attempts += 1
        outcome = outcomes.get(event.pk.hex)
        if outcome is not None and outcome.ok:
            event.published_at = now
            event.message_id = outcome.message_id
            event.last_error = ""
            report.published += 1
        else:
            event.last_error = (outcome.error if outcome else error)[:2000]
            delay = min(2**event.attempts, MAX_BACKOFF_SECONDS)
            event.next_attempt_at = now + timedelta(seconds=delay)
            report.failed += 1
    OutboxEvent.objects.bulk_update(
        events, ["published_at", "message_id", "attempts", "last_error", "next_attempt_at"]
    )


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
    """Ask the cluster to publish soon; never raises into the caller's request."""
    delay = settings.OUTBOX_RELAY_DEBOUNCE
    if delay > 0:
        _debouncer.pull(delay)
        return
    try:
        _enqueue()
    except Exception:
        logger.exception("could not enqueue the outbox relay; the sweep will publish")
