"""The outbox: every change is announced by the service that made it, in its transaction.

Events are rows of the outbox (nudged.core.models.OutboxEvent), written in the transaction of
the change they describe; a completed order is its own record of the sale. After the commit,
the relay (factory_bridge/services/outbox.py) publishes them to SNS: it is asked to here,
unless its loop is running.
"""

import json
import logging
import threading
import uuid
from datetime import timedelta
from time import monotonic

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from inventory import events
from nudged.core.models import OutboxEvent, WorkerLease

logger = logging.getLogger(__name__)

RELAY_TASK = "factory_bridge.tasks.relay_outbox"
RELAY_LOOP = "outbox"
# The relay loop counts as running when it beat within this many seconds.
RELAY_LOOP_FRESH_SECONDS = 5.0

# Every stock event and refusal count is written with this one statement (a row per event):
# the ORM's bulk_create costs several times the insert itself.
INSERT_SQL = (
    "INSERT INTO `factory_bridge_outboxevent` (`id`, `topic`, `event_type`, `subject`, "
    "`body`, `attributes`, `sku`, `created_at`, `published_at`, `next_attempt_at`, "
    "`attempts`, `last_error`) VALUES "
)
ROW_SQL = "(%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s, 0, '')"


def record(batch: list[events.Event]) -> list[uuid.UUID]:
    """Write events to the outbox in the caller's transaction; relay them after commit.

    Returns the new events' ids.
    """
    if not settings.EVENTS_ENABLED or not batch:
        return []
    now = timezone.now()
    db_now = connection.ops.adapt_datetimefield_value(now)
    pk = OutboxEvent._meta.pk
    ids, params = [], []
    for event in batch:
        event_id = uuid.uuid4()
        ids.append(event_id)
        params += [
            pk.get_db_prep_value(event_id, connection),
            event.topic,
            event.event_type,
            event.subject,
            json.dumps(events.body(event, event_id, now)),
            json.dumps(events.attributes(event)),
            event.sku,
            db_now,
            db_now,
        ]
    with connection.cursor() as cursor:
        cursor.execute(INSERT_SQL + ", ".join([ROW_SQL] * len(batch)), params)
    transaction.on_commit(trigger_relay)
    return ids


def sold() -> None:
    """An order is committing: have its sale published soon (its row is the record)."""
    if settings.EVENTS_ENABLED:
        transaction.on_commit(trigger_relay)


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
