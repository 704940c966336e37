"""The factory order: one per reorder decision, placed by whoever holds its request's claim."""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.factory import FactoryError, ManufactureOrder, get_factory_client
from factory_bridge.messages import Envelope
from factory_bridge.models import RestockRequest
from factory_bridge.selectors import batch_of
from factory_bridge.services import factory_calls
from factory_bridge.services.restock.callback import callback_url
from factory_bridge.services.restock.tracking import lock_product, track
from inventory import events
from inventory.models import Product, ReorderDecision
from inventory.services import batch_accepted, hold_on_order, review
from nudged.core.logs import log_context

logger = logging.getLogger(__name__)

ORDERED, DUPLICATE, ABSORBED, IN_FLIGHT = "ordered", "duplicate", "absorbed", "in flight"
# Added to the factory call's own timeouts: a claim older than that belongs to a caller that
# died, and the request may be ordered again.
CLAIM_SLACK_SECONDS = 30


def order_restock(*, envelope: Envelope, sqs_message_id: str) -> str:
    """Place one factory order per reorder decision, however often its message comes.

    A `stock.low` carries the decision inventory made with the order that called for it.
    A `stock.depleted` orders only when nothing is on order or in progress for the product
    (inventory decides how much): orders normally decide first, in their own transaction.
    """
    now = timezone.now()
    with transaction.atomic():
        product = (
            Product.objects.select_for_update().select_related("factory").filter(sku=envelope.sku)
        ).first()
        if product is None:
            raise UnreadableMessage(f"unknown SKU {envelope.sku!r} in {envelope.event_type}")
        request = RestockRequest.objects.filter(depletion_key=envelope.event_id).first()
        decision = None
        if request is None and envelope.event_type == events.STOCK_LOW:
            decision = _decision(envelope, product)
            request = RestockRequest.objects.filter(decision=decision).first()
        if request is not None and request.status not in RestockRequest.NOT_ACCEPTED:
            logger.info("duplicate event=%s restock=%s", envelope.event_id, request.pk)
            return DUPLICATE
        if request is None and decision is None:
            in_progress = RestockRequest.objects.filter(product=product).in_progress().first()
            if product.on_order or in_progress is not None:
                logger.info(
                    "depletion=%s absorbed sku=%s on_order=%s restock=%s",
                    envelope.event_id,
                    product.sku,
                    product.on_order,
                    in_progress.pk if in_progress else "-",
                )
                return ABSORBED
            decision = review(product_id=product.pk)
            if decision is None:
                logger.info("depletion=%s sku=%s: nothing to order", envelope.event_id, product.sku)
                return ABSORBED
        if request is None:
            assert decision is not None  # no request: one was decided above, or this returned
            request = RestockRequest.objects.create(
                product=product,
                factory=product.factory,
                quantity=decision.quantity,
                decision=decision,
                depletion_key=envelope.event_id,
                sqs_message_id=sqs_message_id,
                claimed_until=_claim_end(now),
            )
            track(product_id=product.pk, restock_id=request.pk, status=request.status)
        elif claim_request(
            request.pk,
            now=now,
            statuses=[request.status],
            status=RestockRequest.Status.PENDING,
            sqs_message_id=sqs_message_id,
            # A failed restock whose message comes back (redriven by staff) starts over.
            **({"reorders": 0} if request.status == RestockRequest.Status.FAILED else {}),  # type: ignore[arg-type]  # only "reorders"
        ):
            if request.status == RestockRequest.Status.FAILED:
                hold_on_order(product_id=product.pk, quantity=request.quantity)
                track(
                    product_id=product.pk,
                    restock_id=request.pk,
                    status=RestockRequest.Status.PENDING,
                )
            request = RestockRequest.objects.select_related("product", "factory").get(pk=request.pk)
        else:
            logger.info(
                "event=%s restock=%s: a factory call is already under way",
                envelope.event_id,
                request.pk,
            )
            return IN_FLIGHT
    place_factory_order(request)
    return ORDERED


def _decision(envelope: Envelope, product: Product) -> ReorderDecision:
    decision_id = envelope.message.get("decision_id")
    decision = (
        ReorderDecision.objects.filter(pk=decision_id, product=product).first()
        if isinstance(decision_id, int)
        else None
    )
    if decision is None:
        raise UnreadableMessage(f"stock.low names no decision of {product.sku}: {decision_id!r}")
    return decision


def place_factory_order(request: RestockRequest) -> None:
    """Call the legacy factory for a request the caller claimed; FactoryError if not accepted.

    A refusal schedules the sweep's next attempt (`next_attempt_at`, backing off).
    """
    with log_context(restock=request.pk):
        _place_factory_order(request)


def _place_factory_order(request: RestockRequest) -> None:
    order = ManufactureOrder(
        product_id=request.product.sku,
        quantity=request.quantity,
        factory_id=request.factory.code,
        requester=settings.FACTORY_REQUESTER,
        callback_url=callback_url(request),
        idempotency_key=request.depletion_key,
    )
    started = monotonic()
    try:
        job_id = get_factory_client().order(order)
    except FactoryError as exc:
        factory_calls.record_call(outcome=exc.kind, seconds=monotonic() - started)
        now = timezone.now()
        # Only while not accepted: a timed-out call the factory did take may have called back.
        RestockRequest.objects.filter(pk=request.pk, status__in=RestockRequest.NOT_ACCEPTED).update(
            attempts=F("attempts") + 1,
            last_error=exc.summary,
            next_attempt_at=now + _backoff(request.reorders),
            claimed_until=None,
            updated_at=now,
        )
        logger.warning("factory refused restock=%s sku=%s: %s", request.pk, order.product_id, exc)
        raise
    except Exception:
        factory_calls.record_call(outcome=factory_calls.ERROR, seconds=monotonic() - started)
        raise
    factory_calls.record_call(outcome=factory_calls.OK, seconds=monotonic() - started)
    now = timezone.now()
    accepted = {
        "factory_job_id": job_id,
        "requested_at": now,
        "attempts": F("attempts") + 1,
        "last_error": "",
        "next_attempt_at": None,
        "claimed_until": None,
        "updated_at": now,
    }
    rows = RestockRequest.objects.filter(pk=request.pk)
    with transaction.atomic():
        lock_product(request.product_id)
        moved = rows.filter(status__in=RestockRequest.NOT_ACCEPTED).update(
            status=RestockRequest.Status.REQUESTED, **accepted
        )
        if moved:
            track(
                product_id=request.product_id,
                restock_id=request.pk,
                status=RestockRequest.Status.REQUESTED,
                incoming=request.quantity,
            )
            batch_accepted(batch_id=batch_of(request), at=now, lead_time=request.factory.lead_time)
        else:
            # The callback came before this answer (a slow factory) and fulfilled the
            # request: it stays fulfilled, so the sweep never takes it for overdue and orders
            # it again.
            rows.update(**accepted)
    if not moved:
        logger.info(
            "factory answered after its callback restock=%s sku=%s job=%s: already fulfilled",
            request.pk,
            order.product_id,
            job_id,
        )
        return
    logger.info(
        "factory order placed restock=%s sku=%s quantity=%s job=%s",
        request.pk,
        order.product_id,
        order.quantity,
        job_id,
    )


def _claim_end(now: datetime) -> datetime:
    call = settings.FACTORY_CONNECT_TIMEOUT + settings.FACTORY_READ_TIMEOUT
    return now + timedelta(seconds=call + CLAIM_SLACK_SECONDS)


def unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def claim_request(
    pk: int,
    *,
    now: datetime,
    statuses: Sequence[str] = RestockRequest.NOT_ACCEPTED,
    by_sweep: bool = False,
    **changes: Any,
) -> bool:
    """Take the sole right to call the factory for a request it has not accepted.

    One conditional UPDATE, so a consumer and the sweep never both order the same request.
    For the sweep, only once its next attempt is due and while under the re-order cap.
    False when the request is not there to take (held, accepted, or its status moved on).
    """
    requests = RestockRequest.objects.filter(unclaimed(now), pk=pk, status__in=statuses)
    if by_sweep:
        requests = requests.retry_due(now).filter(reorders__lt=settings.FACTORY_MAX_REORDERS)
    return requests.update(claimed_until=_claim_end(now), updated_at=now, **changes) == 1


def _backoff(reorders: int) -> timedelta:
    """30 s, 60 s, 120 s … (FACTORY_RETRY_BACKOFF doubled per retry), capped."""
    seconds = settings.FACTORY_RETRY_BACKOFF * 2 ** min(reorders, 16)
    return timedelta(seconds=min(seconds, settings.FACTORY_RETRY_BACKOFF_MAX))
