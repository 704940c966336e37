"""The promise ledger: units of batches in production promised to waiting pre-orders.

Every write here runs under the product's row lock (orders, arrivals and give-ups take it
first), so one product's promises change one at a time: no unit is promised twice, and a
batch's promised units never pass its quantity (a check constraint behind it). What becomes
of a promise moves its order along in the same transaction: the shop, which inventory does not
import, fills the PreOrders port when it starts (shop/apps.py).
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inventory.models import Product, Promise, ReorderDecision

logger = logging.getLogger(__name__)

GIVEN_UP = "production gave up on its batch"
LATE = "its batch is late beyond the margin"


class PreOrders(Protocol):
    """The orders waiting on promises: moved along when their promise is kept or cancelled."""

    def complete(self, *, promise_ids: list[int]) -> None: ...

    def cancel(self, *, reasons: dict[int, str]) -> None: ...


_pre_orders: PreOrders | None = None


def register_pre_orders(pre_orders: PreOrders) -> None:
    """Name who holds the orders behind the promises (the shop, once, when it starts)."""
    global _pre_orders
    _pre_orders = pre_orders


def pre_orders() -> PreOrders:
    if _pre_orders is None:
        raise ImproperlyConfigured("no pre-orders registered: is the shop installed?")
    return _pre_orders


def margin(lead_time: float) -> timedelta:
    """What a promise allows beyond its batch's expected arrival (PROMISE_MARGIN*)."""
    return timedelta(seconds=lead_time * settings.PROMISE_MARGIN + settings.PROMISE_MARGIN_SECONDS)


def ready_by(batch: ReorderDecision) -> datetime:
    """The time promised for units of `batch`."""
    assert batch.due_at is not None  # open_batch chooses only batches with a due time
    return batch.due_at + margin(batch.lead_time)


def open_batch(
    *, product_id: int, quantity: int, exclude: int | None = None
) -> ReorderDecision | None:
    """The batch due first with `quantity` units nobody was promised; lock the product first.

    Only batches still due in the future: one already late (a factory call being retried, a
    lost callback) would make a promise broken from the start. Its units still serve the
    waiting orders if it lands.
    """
    batches = ReorderDecision.objects.filter(
        product_id=product_id,
        settled_at__isnull=True,
        due_at__gt=timezone.now(),
        quantity__gte=F("promised") + quantity,
    )
    if exclude is not None:
        batches = batches.exclude(pk=exclude)
    return batches.order_by("due_at", "pk").first()


def promise_from(*, batch: ReorderDecision, quantity: int, email: str = "") -> Promise:
    """Promise `quantity` units of `batch` (chosen under the product's lock)."""
    ReorderDecision.objects.filter(pk=batch.pk).update(promised=F("promised") + quantity)
    # Promised units are known demand, ordered one for one: counting them in the guessed
    # demand rate too would order them twice, and what guesses order is what is left over.
    Product.objects.filter(pk=batch.product_id).update(promised=F("promised") + quantity)
    return Promise.objects.create(
        product_id=batch.product_id,
        batch=batch,
        quantity=quantity,
        ready_by=ready_by(batch),
        email=email,
    )


@dataclass(frozen=True)
class Arrival:
    """What an arrival did: the promises it kept, and the units left for the shelf."""

    kept: list[Promise]
    shelf: int

    @property
    def served(self) -> int:
        return sum(p.quantity for p in self.kept)


def serve_arrival(*, product_id: int, batch_id: int | None, quantity: int) -> Arrival:
    """Give arrived units to the product's waiting promises, oldest first; lock the product.

    The batch's own promises are served whatever their place (their units were set aside in
    it). Units nobody was promised serve other waiting promises, oldest first, each whole:
    one larger than what is left keeps waiting for its own batch, and younger, smaller ones
    behind it are served (they lose it nothing). The rest goes on the shelf.
    """
    now = timezone.now()
    own = (
        ReorderDecision.objects.filter(pk=batch_id, settled_at__isnull=True).first()
        if batch_id is not None
        else None
    )
    spare = quantity - (own.promised if own else 0)
    kept: list[Promise] = []
    freed: dict[int, int] = defaultdict(int)
    waiting = Promise.objects.filter(product_id=product_id, state=Promise.State.WAITING)
    if own is not None and spare <= 0:
        # Nothing left over for other batches' orders: only this batch's are read.
        waiting = waiting.filter(batch_id=own.pk)
    for waiter in waiting.order_by("pk"):
        if own is not None and waiter.batch_id == own.pk:
            kept.append(waiter)
        elif 0 < waiter.quantity <= spare:
            spare -= waiter.quantity
            kept.append(waiter)
            if waiter.batch_id is not None:
                freed[waiter.batch_id] += waiter.quantity
    for other, units in freed.items():
        ReorderDecision.objects.filter(pk=other).update(promised=F("promised") - units)
    if own is not None:
        ReorderDecision.objects.filter(pk=own.pk).update(promised=0, settled_at=now)
    if kept:
        served_by = {"batch_id": batch_id} if batch_id is not None else {}
        Promise.objects.filter(pk__in=[p.pk for p in kept]).update(
            state=Promise.State.KEPT, settled_at=now, **served_by
        )
        _owe_notices(kept, now)
        for waiter in kept:
            waiter.state, waiter.settled_at = Promise.State.KEPT, now
        pre_orders().complete(promise_ids=[p.pk for p in kept])
        logger.info(
            "promises kept batch=%s product=%s orders=%s units=%s",
            batch_id,
            product_id,
            len(kept),
            sum(p.quantity for p in kept),
        )
    return Arrival(kept=kept, shelf=max(spare, 0))


def settle_late(*, now: datetime | None = None) -> int:
    """Move or cancel the waiting promises whose time has passed; return how many.

    A lost callback leaves its batch due for ever; the promises on it are not left waiting.
    """
    now = now or timezone.now()
    late = Promise.objects.filter(state=Promise.State.WAITING, ready_by__lt=now)
    products = sorted(set(late.values_list("product_id", flat=True)))
    settled = 0
    for product_id in products:
        with transaction.atomic():
            Product.objects.select_for_update().filter(pk=product_id).first()
            promises = list(late.filter(product_id=product_id).order_by("pk"))
            rehome(promises, reason=LATE, now=now)
            settled += len(promises)
    return settled


def rehome(promises: list[Promise], *, reason: str, now: datetime | None = None) -> None:
    """Move each promise to another open batch due in time, or cancel it with `reason`.

    In time: the new time promised is at most one margin after the old one (or after now,
    for a promise already late). The units leave their old batch either way.
    """
    now = now or timezone.now()
    moved: list[Promise] = []
    cancelled: list[Promise] = []
    for waiter in promises:
        old_batch = waiter.batch_id
        batch = open_batch(
            product_id=waiter.product_id, quantity=waiter.quantity, exclude=old_batch
        )
        latest = max(waiter.ready_by, now)
        if batch is not None and ready_by(batch) <= latest + margin(batch.lead_time):
            ReorderDecision.objects.filter(pk=batch.pk).update(
                promised=F("promised") + waiter.quantity
            )
            waiter.batch, waiter.ready_by = batch, ready_by(batch)
            Promise.objects.filter(pk=waiter.pk).update(batch=batch, ready_by=waiter.ready_by)
            moved.append(waiter)
        else:
            Product.objects.filter(pk=waiter.product_id).update(
                promised=F("promised") - waiter.quantity
            )
            waiter.state, waiter.reason, waiter.settled_at = Promise.State.CANCELLED, reason, now
            Promise.objects.filter(pk=waiter.pk).update(
                state=waiter.state, reason=reason, settled_at=now
            )
            cancelled.append(waiter)
        if old_batch is not None:
            ReorderDecision.objects.filter(pk=old_batch).update(
                promised=F("promised") - waiter.quantity
            )
    if moved:
        logger.warning(
            "promises moved (%s) promises=%s", reason, ",".join(str(p.pk) for p in moved)
        )
    if cancelled:
        _owe_notices(cancelled, now)
        pre_orders().cancel(reasons={p.pk: p.reason for p in cancelled})
        logger.warning(
            "promises cancelled (%s) promises=%s", reason, ",".join(str(p.pk) for p in cancelled)
        )


def _owe_notices(settled: list[Promise], now: datetime) -> None:
    """The promises that carry an address owe it an email (the notify loop sends it)."""
    if any(p.email for p in settled):
        Promise.objects.filter(pk__in=[p.pk for p in settled if p.email]).update(notice_after=now)
