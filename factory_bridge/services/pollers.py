"""Long-polling loops run inside the django-q2 cluster, one live owner each.

django-q2's own SQS broker cannot read SNS envelopes, and its scheduler wakes only every
15-30 s, so each queue gets a loop that long-polls for POLLER_RUN_SECONDS, then hands over
to a successor task. A lease row makes a second copy exit at once; the minute schedule
(`ensure_pollers`) only restarts a loop whose lease went stale (its worker died).
"""

import logging
import uuid
from collections.abc import Callable
from time import monotonic, sleep

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from factory_bridge.queues import QueueError
from factory_bridge.services.dlq import watch_dlq
from factory_bridge.services.notify import consume_notify
from factory_bridge.services.outbox import relay_round
from factory_bridge.services.restock.consumer import consume_restock
from inventory.services import estimates_round
from nudged.core import leases
from nudged.core.models import WorkerLease

logger = logging.getLogger(__name__)

POLLER_TASK = "factory_bridge.tasks.run_poller"


def _loops() -> dict[str, Callable[..., object]]:
    return {
        "outbox": relay_round,
        "restock": consume_restock,
        "dlq": watch_dlq,
        "estimates": lambda wait: estimates_round(),
        "notify": consume_notify,
    }


def run_poller(*, name: str, seconds: float | None = None, handover: bool = True) -> int:
    """Run the named loop for `seconds`; return how many rounds it made."""
    loop = _loops()[name]
    owner = uuid.uuid4().hex
    if not leases.claim(name, owner):
        logger.info("poller %s already running elsewhere; exiting", name)
        return 0
    deadline = monotonic() + (seconds if seconds is not None else settings.POLLER_RUN_SECONDS)
    rounds = 0
    kept = True
    logger.info("poller %s started owner=%s", name, owner)
    leases.enter_loop(name, owner, deadline)
    try:
        while monotonic() < deadline:
            if not leases.renew(name, owner):
                kept = False
                logger.warning("poller %s lost its lease; exiting", name)
                break
            try:
                loop(wait=settings.SQS_WAIT_TIME)
            except QueueError as exc:
                logger.warning("poller %s: queue unreachable: %s", name, exc)
                sleep(2)
            except Exception:
                logger.exception("poller %s: round failed", name)
                sleep(2)
            rounds += 1
            close_old_connections()
    finally:
        leases.leave_loop()
        # Before the release: no successor starts until this line is written.
        logger.info("poller %s stopped owner=%s rounds=%s", name, owner, rounds)
        if kept:
            leases.release(name, owner)
    if kept and handover:
        enqueue(name)
    return rounds


def enqueue(name: str) -> None:
    from django_q.tasks import async_task

    async_task(POLLER_TASK, name, task_name=f"poller-{name}", q_options={"save": False})


def ensure_pollers(*, takeover: bool = False) -> list[str]:
    """Start the loops whose lease is missing or stale; return their names.

    With `takeover` (a cluster starting) every lease is released first: a loop that is in
    fact still alive elsewhere loses its lease at its next beat and exits.
    """
    if takeover:
        WorkerLease.objects.update(owner="", heartbeat_at=None)
    cutoff = timezone.now() - leases.stale_after()
    started = []
    for name in _loops():
        lease = WorkerLease.objects.filter(name=name).first()
        if lease is None or lease.heartbeat_at is None or lease.heartbeat_at < cutoff:
            enqueue(name)
            started.append(name)
    if started:
        logger.info("started pollers %s", ", ".join(started))
    return started


def poller_status() -> list[dict]:
    cutoff = timezone.now() - leases.stale_after()
    return [
        {
            "name": lease.name,
            "alive": bool(lease.heartbeat_at and lease.heartbeat_at >= cutoff),
            "heartbeat_at": lease.heartbeat_at.isoformat() if lease.heartbeat_at else None,
        }
        for lease in WorkerLease.objects.filter(name__in=_loops()).order_by("name")
    ]
