"""Leases: one process at a time does a job, whichever host it runs on.

A lease is a WorkerLease row named for its job: each loop's (services/pollers.py), the overdue
sweep's, a redrive's or discard's (`dlq-redrive`) and the sales relay's. Whoever beat it within
`stale_after()` holds it; one that dies holding it leaves it to be taken once it is stale.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from factory_bridge.models import WorkerLease


def stale_after() -> timedelta:
    return timedelta(seconds=settings.SQS_WAIT_TIME * 2 + 60)


def claim(name: str, owner: str, *, stale: timedelta | None = None) -> bool:
    """Take the named lease for `owner` unless another holder beat it within `stale`
    (`stale_after()` unless given: a job whose single step may take longer says so)."""
    now = timezone.now()
    cutoff = now - (stale or stale_after())
    WorkerLease.objects.get_or_create(name=name)
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
