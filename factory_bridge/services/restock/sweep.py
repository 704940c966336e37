"""The overdue sweep: order again what the factory refused or never called back for."""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from factory_bridge.factory import FactoryError
from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.abandon import give_up
from factory_bridge.services.restock.factory_order import (
    claim_request,
    place_factory_order,
    unclaimed,
)
from factory_bridge.services.restock.tracking import lock_product, track
from inventory.models import Factory
from nudged.core import leases

logger = logging.getLogger(__name__)

REORDER_LEASE = "reorder-overdue"
REORDER_SEPARATOR = "/reorder-"
# Fewest seconds the sweep waits for a callback, however fast the factory measured.
CALLBACK_WAIT_FLOOR = 60.0


@dataclass
class SweepReport:
    """Restock ids by what the overdue sweep did with them."""

    reordered: list[int] = field(default_factory=list)  # new requests for overdue ones
    placed: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def reorder_overdue() -> SweepReport:
    """Order again what the factory did not accept or never called back for, up to the cap.

    Requests the factory refused are retried with backoff whether or not their queue message
    still exists; after FACTORY_MAX_REORDERS orders by the sweep a restock fails for good and
    needs staff. Runs under a lease, and each factory call under a claim on its request.
    """
    report = SweepReport()
    owner = uuid.uuid4().hex
    if not leases.claim(REORDER_LEASE, owner):
        logger.info("overdue sweep already running elsewhere")
        return report
    try:
        requested = RestockRequest.objects.filter(
            status=RestockRequest.Status.REQUESTED,
            reorders__gte=settings.FACTORY_MAX_REORDERS,
        )
        for pk in _overdue_ids():
            if give_up(requested, pk=pk, error="no callback from the factory"):
                report.failed.append(pk)
            elif (reorder := _reorder(pk)) is not None:
                report.reordered.append(reorder.pk)
        now = timezone.now()
        due = RestockRequest.objects.retry_due(now).order_by("next_attempt_at", "pk")
        for pk in due.values_list("pk", flat=True):
            _retry(pk, now=now, report=report)
    finally:
        leases.release(REORDER_LEASE, owner)
    return report


def callback_wait(lead_time: float) -> float:
    """Seconds after the factory accepted an order before its callback counts as lost.

    FACTORY_CALLBACK_LEAD_TIMES measured lead times, at least CALLBACK_WAIT_FLOOR and at most
    FACTORY_CALLBACK_TIMEOUT: a lost callback is noticed while its pre-orders can be moved.
    """
    wait = max(settings.FACTORY_CALLBACK_LEAD_TIMES * lead_time, CALLBACK_WAIT_FLOOR)
    return min(wait, settings.FACTORY_CALLBACK_TIMEOUT)


def _overdue_ids() -> list[int]:
    now = timezone.now()
    requested = RestockRequest.objects.filter(status=RestockRequest.Status.REQUESTED)
    overdue: list[int] = []
    for factory_id, lead_time in Factory.objects.values_list("pk", "lead_time"):
        cutoff = now - timedelta(seconds=callback_wait(lead_time))
        overdue += requested.filter(factory_id=factory_id, requested_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    return sorted(overdue)


def _reorder(pk: int) -> RestockRequest | None:
    product_id = RestockRequest.objects.filter(pk=pk).values_list("product_id", flat=True).first()
    if product_id is None:
        return None
    with transaction.atomic():
        lock_product(product_id)
        request = (
            RestockRequest.objects.select_for_update()
            .filter(pk=pk, status=RestockRequest.Status.REQUESTED)
            .first()
        )
        if request is None:
            return None
        RestockRequest.objects.filter(pk=pk, status=RestockRequest.Status.REQUESTED).update(
            status=RestockRequest.Status.OVERDUE, updated_at=timezone.now()
        )
        track(
            product_id=product_id,
            restock_id=request.pk,
            status=RestockRequest.Status.OVERDUE,
            incoming=-request.quantity,
        )
        # Keyed on the original depletion, so the key stays short however often it repeats.
        root = request.depletion_key.split(REORDER_SEPARATOR)[0]
        # Due at once: the retry pass of this sweep places it, and counts it as a re-order.
        reorder = RestockRequest.objects.create(
            product_id=request.product_id,
            factory_id=request.factory_id,
            quantity=request.quantity,
            depletion_key=f"{root}{REORDER_SEPARATOR}{request.pk}",
            replaces=request,
            reorders=request.reorders,
        )
        track(product_id=product_id, restock_id=reorder.pk, status=reorder.status)
    logger.warning(
        "restock=%s overdue (no callback after %.0fs): reordering as restock=%s",
        request.pk,
        (timezone.now() - request.requested_at).total_seconds(),  # type: ignore[operator]  # set when REQUESTED
        reorder.pk,
    )
    return reorder


def _retry(pk: int, *, now: datetime, report: SweepReport) -> None:
    """Order a request the factory has not accepted again, or fail it once at the cap."""
    if not claim_request(pk, now=now, by_sweep=True, reorders=F("reorders") + 1):
        at_cap = RestockRequest.objects.retry_due(now).filter(
            unclaimed(now), reorders__gte=settings.FACTORY_MAX_REORDERS
        )
        if give_up(at_cap, pk=pk, error=None):
            report.failed.append(pk)
        return
    request = RestockRequest.objects.select_related("product", "factory").get(pk=pk)
    try:
        place_factory_order(request)
    except FactoryError:
        report.refused.append(pk)
        if request.reorders >= settings.FACTORY_MAX_REORDERS:
            still_waiting = RestockRequest.objects.filter(
                unclaimed(timezone.now()), status__in=RestockRequest.NOT_ACCEPTED
            )
            if give_up(still_waiting, pk=pk, error=None):
                report.failed.append(pk)
        return
    report.placed.append(pk)
