"""Leases: one process at a time does a job, whichever host it runs on.

A lease is a WorkerLease row named for its job: each loop's (factory_bridge/services/pollers.py),
the overdue sweep's, a redrive's or discard's (`dlq-redrive`) and the sales relay's. Whoever
beat it within `stale_after()` holds it; one that dies holding it leaves it to be taken once
it is stale.
"""

import threading
from datetime import timedelta
from time import monotonic

from django.conf import settings
from django.db import OperationalError
from django.db.models import Q
from django.utils import timezone

from nudged.core.models import WorkerLease

DEADLOCK = 1213
# The lease and deadline of the loop running in this thread, for `keep_going`.
_running = threading.local()


def stale_after() -> timedelta:
    return timedelta(seconds=settings.SQS_WAIT_TIME * 2 + 60)


def claim(name: str, owner: str, *, stale: timedelta | None = None) -> bool:
    """Take the named lease for `owner` unless another holder beat it within `stale`
    (`stale_after()` unless given: a job whose single step may take longer says so)."""
    now = timezone.now()
    cutoff = now - (stale or stale_after())
    try:
        WorkerLease.objects.get_or_create(name=name)
    except OperationalError as exc:
        # Concurrent first claims insert the same name: InnoDB may end one of them as a
        # deadlock, whose winner has created the row that the UPDATE below needs.
        if exc.args[0] != DEADLOCK:
            raise
    taken = WorkerLease.objects.filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff) | Q(owner=owner),
        name=name,
    ).update(owner=owner, heartbeat_at=now, started_at=now)
    return taken == 1


def renew(name: str, owner: str) -> bool:
    """Beat a lease this owner holds; False when it has lost it."""
    return (
        WorkerLease.objects.filter(name=name, owner=owner).update(heartbeat_at=timezone.now()) == 1
    )


def is_held(name: str) -> bool:
    """Whether someone holds the named lease and has beaten it recently."""
    return (
        WorkerLease.objects.filter(name=name, heartbeat_at__gte=timezone.now() - stale_after())
        .exclude(owner="")
        .exists()
    )


def release(name: str, owner: str) -> None:
    WorkerLease.objects.filter(name=name, owner=owner).update(heartbeat_at=None, owner="")


def enter_loop(name: str, owner: str, deadline: float) -> None:
    """Mark this thread as running the loop that holds the named lease until `deadline`."""
    _running.lease = (name, owner, deadline)


def leave_loop() -> None:
    _running.lease = None


def keep_going() -> bool:
    """Beat the calling loop's lease before another unit of work; False when it should stop.

    A round that handles several slow items beats per item, so its lease never looks stale
    (which would start a second copy), and takes no new item once the loop has lost its
    lease or run past its time (its successor takes over). Outside a loop: always True.
    """
    running = getattr(_running, "lease", None)
    if running is None:
        return True
    name, owner, deadline = running
    return monotonic() < deadline and renew(name, owner)
