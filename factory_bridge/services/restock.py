"""Restocking: depletion messages become factory orders; the factory's callback adds stock."""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from factory_bridge import events
from factory_bridge.exceptions import (
    CallbackForFailedRestock,
    CallbackMismatch,
    ExpiredCallback,
    ForgedCallback,
    UnreadableMessage,
)
from factory_bridge.factory import FactoryError, ManufactureOrder, get_factory_client
from factory_bridge.messages import Envelope, read_envelope
from factory_bridge.models import RestockRequest
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services import factory_calls, outbox, pollers
from factory_bridge.services.dlq import dead_letter, record_failure
from inventory.models import Factory, Product, ReorderDecision
from inventory.services import (
    batch_accepted,
    end_depletion,
    give_up_batch,
    hold_on_order,
    receive_stock,
    review,
)
from nudged.logs import add_to_log_context, log_context

logger = logging.getLogger(__name__)

CALLBACK_SALT = "factory_bridge.callback"
REORDER_LEASE = "reorder-overdue"
REORDER_SEPARATOR = "/reorder-"
ORDERED, DUPLICATE, ABSORBED, IN_FLIGHT = "ordered", "duplicate", "absorbed", "in flight"
# Added to the factory call's own timeouts: a claim older than that belongs to a caller that
# died, and the request may be ordered again.
CLAIM_SLACK_SECONDS = 30
# Seconds one message may take beyond its factory call (database, SQS).
MESSAGE_MARGIN = 2.0
# Longest depletion event id taken (ours are 36): the restock's key adds a re-order suffix.
EVENT_ID_MAX = 64


@dataclass
class ConsumeReport:
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def callback_token(request: RestockRequest) -> str:
    return signing.dumps(request.pk, salt=CALLBACK_SALT)


def callback_url(request: RestockRequest) -> str:
    return f"{settings.PUBLIC_BASE_URL}/factory/callbacks/{callback_token(request)}/"


def consume_restock(*, wait: int) -> ConsumeReport:
    """Receive one batch of depletions from the restock queue and order each from the factory.

    Each message is handled on its own: whatever goes wrong with one is recorded for it and
    the batch goes on. Before each message the rest of the batch is hidden again for a full
    visibility timeout when less than one message's worst case is left, so that no message
    reappears (and reaches a second consumer) while this one still holds it.
    """
    queue = SqsQueue(settings.SQS_RESTOCK_QUEUE)
    report = ConsumeReport()
    visibility = settings.SQS_VISIBILITY_TIMEOUT
    batch = queue.receive(wait=wait, visibility=visibility)
    hidden_until = monotonic() + visibility
    handled = 0
    while batch:
        # The first message goes right after the round's own beat: releasing it unhandled
        # would cost it one of its receives.
        if handled and not pollers.keep_going():
            # The loop's time is up or its lease is gone: its successor takes these at once.
            queue.change_visibility_batch(batch, 0)
            report.count("released")
            break
        if hidden_until - monotonic() < message_budget():
            lost = queue.change_visibility_batch(batch, visibility)
            hidden_until = monotonic() + visibility
            for message_id in lost:
                logger.warning("message=%s no longer held; left to its new reader", message_id)
            batch = [m for m in batch if m.message_id not in lost]
            if not batch:
                break
        message, *batch = batch
        report.count(_handle(queue, message))
        handled += 1
    return report


def message_budget() -> float:
    """Seconds one message may take at worst: the factory call, plus the database and SQS."""
    return settings.FACTORY_CONNECT_TIMEOUT + settings.FACTORY_READ_TIMEOUT + MESSAGE_MARGIN


def _handle(queue: SqsQueue, message: ReceivedMessage) -> str:
    """Handle one message and say how it went; no error escapes to the rest of the batch."""
    with log_context(sqs_message=message.message_id):
        return _handle_one(queue, message)


def _handle_one(queue: SqsQueue, message: ReceivedMessage) -> str:
    try:
        outcome = handle_depletion_message(message)
    except UnreadableMessage as exc:
        dead_letter(queue, message, str(exc))
        return "unreadable"
    except FactoryError as exc:
        # Left in the queue: it comes back after the visibility timeout, and after
        # SQS_MAX_RECEIVE_COUNT receives SQS moves it to the DLQ.
        _note_failure(queue, message, f"factory {exc}")
        return "retry"
    except Exception as exc:
        logger.exception("depletion message=%s failed", message.message_id)
        _note_failure(queue, message, f"{type(exc).__name__}: {exc}")
        return "retry"
    try:
        queue.delete(message)
    except QueueError as exc:
        logger.warning(
            "could not delete message=%s; it will be redelivered: %s", message.message_id, exc
        )
    return outcome


def _note_failure(queue: SqsQueue, message: ReceivedMessage, error: str) -> None:
    try:
        record_failure(message, queue.name, error)
    except Exception:
        logger.exception("could not record the failure of message=%s", message.message_id)


def handle_depletion_message(message: ReceivedMessage) -> str:
    envelope = read_envelope(message.body)
    if envelope.event_type not in (events.STOCK_LOW, events.STOCK_DEPLETED):
        raise UnreadableMessage(f"unexpected event type {envelope.event_type[:40]!r}")
    if not envelope.sku:
        raise UnreadableMessage(f"{envelope.event_type} names no SKU")
    if len(envelope.event_id) > EVENT_ID_MAX:
        raise UnreadableMessage(
            f"event id longer than {EVENT_ID_MAX} characters: {envelope.event_id[:40]!r}…"
        )
    return order_restock(envelope=envelope, sqs_message_id=message.message_id)


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
        elif _claim(
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
    if not rows.filter(status__in=RestockRequest.NOT_ACCEPTED).update(
        status=RestockRequest.Status.REQUESTED, **accepted
    ):
        # The callback came before this answer (a slow factory) and fulfilled the request:
        # it stays fulfilled, so the sweep never takes it for overdue and orders it again.
        rows.update(**accepted)
        logger.info(
            "factory answered after its callback restock=%s sku=%s job=%s: already fulfilled",
            request.pk,
            order.product_id,
            job_id,
        )
        return
    batch_accepted(batch_id=batch_of(request), at=now, lead_time=request.factory.lead_time)
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


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def _claim(
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
    requests = RestockRequest.objects.filter(_unclaimed(now), pk=pk, status__in=statuses)
    if by_sweep:
        requests = requests.retry_due(now).filter(reorders__lt=settings.FACTORY_MAX_REORDERS)
    return requests.update(claimed_until=_claim_end(now), updated_at=now, **changes) == 1


def _backoff(reorders: int) -> timedelta:
    """30 s, 60 s, 120 s … (FACTORY_RETRY_BACKOFF doubled per retry), capped."""
    seconds = settings.FACTORY_RETRY_BACKOFF * 2 ** min(reorders, 16)
    return timedelta(seconds=min(seconds, settings.FACTORY_RETRY_BACKOFF_MAX))


def callback_restock_id(*, token: str) -> int:
    """Return the restock request a callback token names, if we signed it and it is current."""
    try:
        pk = signing.loads(token, salt=CALLBACK_SALT, max_age=settings.FACTORY_CALLBACK_MAX_AGE)
    except signing.SignatureExpired as exc:
        logger.warning(
            "expired callback token for restock=%s", signing.loads(token, salt=CALLBACK_SALT)
        )
        raise ExpiredCallback("Callback token has expired.") from exc
    except signing.BadSignature as exc:
        raise ForgedCallback("Callback token is not valid.") from exc
    if not isinstance(pk, int):
        raise ForgedCallback("Callback token names no restock request.")
    return pk


def receive_callback(*, restock_id: int, body: Any) -> tuple[RestockRequest, bool]:
    """Add the restock to stock once; return (request, whether stock was added now).

    `restock_id` comes from callback_restock_id: the caller checks the token before it
    reads the body.
    """
    add_to_log_context(restock=restock_id)
    with transaction.atomic():
        request = (
            RestockRequest.objects.select_for_update()
            .select_related("product", "factory", "decision")
            .filter(pk=restock_id)
            .first()
        )
        if request is None:
            raise ForgedCallback("Callback token names no restock request.")
        if request.status == RestockRequest.Status.FAILED:
            logger.warning("callback for failed restock=%s refused", request.pk)
            raise CallbackForFailedRestock(
                f"Restock request {request.pk} has failed; this callback adds nothing."
            )
        _check_echo(request, body)
        if request.status == RestockRequest.Status.FULFILLED:
            logger.info("callback replayed restock=%s: nothing added", request.pk)
            return request, False
        product = receive_stock(
            product_id=request.product_id,
            quantity=request.quantity,
            note=f"restock {request.pk} (factory job {request.factory_job_id or '?'})",
            lead_time=_lead_time(request),
            batch_id=batch_of(request),
        )
        if request.status == RestockRequest.Status.OVERDUE:
            logger.warning("late callback for overdue restock=%s: stock added", request.pk)
        request.fulfilled_at = timezone.now()
        RestockRequest.objects.filter(pk=request.pk, status=request.status).update(
            status=RestockRequest.Status.FULFILLED,
            fulfilled_at=request.fulfilled_at,
            next_attempt_at=None,
            updated_at=request.fulfilled_at,
        )
        request.status = RestockRequest.Status.FULFILLED
        outbox.record(
            [events.replenished(product=product, quantity=request.quantity, restock_id=request.pk)]
        )
    logger.info(
        "stock arrived restock=%s sku=%s quantity=%s stock=%s",
        request.pk,
        product.sku,
        request.quantity,
        product.stock,
    )
    request.product = product
    return request, True


def batch_of(request: RestockRequest) -> int | None:
    """The reorder decision (the batch) a request orders: a re-order's is its original's."""
    while request.decision_id is None and request.replaces_id is not None:
        request = RestockRequest.objects.only("decision_id", "replaces_id").get(
            pk=request.replaces_id
        )
    return request.decision_id


def _lead_time(request: RestockRequest) -> float | None:
    """Seconds the factory took: from its accepting answer (201) to this callback.

    Failed attempts, their back-off and the wait before a re-order are not production time.
    None for an overdue request (one late callback says little about the usual lead time)
    and for a callback before the answer (nothing to measure from).
    """
    if request.status != RestockRequest.Status.REQUESTED or request.requested_at is None:
        return None
    return (timezone.now() - request.requested_at).total_seconds()


def _check_echo(request: RestockRequest, body: Any) -> None:
    if not isinstance(body, dict):
        raise CallbackMismatch("Callback body must be a JSON object.")
    expected = {
        "MessageAttributeProductId": request.product.sku,
        "MessageAttributeProductCnt": str(request.quantity),
        "MessageAttributeFactoryId": request.factory.code,
    }
    wrong = sorted(k for k, v in expected.items() if str(body.get(k, "")) != v)
    if wrong:
        raise CallbackMismatch(f"Callback does not match the restock request: {', '.join(wrong)}.")


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
    if not pollers.claim(REORDER_LEASE, owner):
        logger.info("overdue sweep already running elsewhere")
        return report
    try:
        requested = RestockRequest.objects.filter(
            status=RestockRequest.Status.REQUESTED,
            reorders__gte=settings.FACTORY_MAX_REORDERS,
        )
        for pk in _overdue_ids():
            if _give_up(requested, pk=pk, error="no callback from the factory"):
                report.failed.append(pk)
            elif (reorder := _reorder(pk)) is not None:
                report.reordered.append(reorder.pk)
        now = timezone.now()
        due = RestockRequest.objects.retry_due(now).order_by("next_attempt_at", "pk")
        for pk in due.values_list("pk", flat=True):
            _retry(pk, now=now, report=report)
    finally:
        pollers.release(REORDER_LEASE, owner)
    return report


# Fewest seconds the sweep waits for a callback, however fast the factory measured.
CALLBACK_WAIT_FLOOR = 60.0


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
    with transaction.atomic():
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
    logger.warning(
        "restock=%s overdue (no callback after %.0fs): reordering as restock=%s",
        request.pk,
        (timezone.now() - request.requested_at).total_seconds(),  # type: ignore[operator]  # set when REQUESTED
        reorder.pk,
    )
    return reorder


def _retry(pk: int, *, now: datetime, report: SweepReport) -> None:
    """Order a request the factory has not accepted again, or fail it once at the cap."""
    if not _claim(pk, now=now, by_sweep=True, reorders=F("reorders") + 1):
        at_cap = RestockRequest.objects.retry_due(now).filter(
            _unclaimed(now), reorders__gte=settings.FACTORY_MAX_REORDERS
        )
        if _give_up(at_cap, pk=pk, error=None):
            report.failed.append(pk)
        return
    request = RestockRequest.objects.select_related("product", "factory").get(pk=pk)
    try:
        place_factory_order(request)
    except FactoryError:
        report.refused.append(pk)
        if request.reorders >= settings.FACTORY_MAX_REORDERS:
            still_waiting = RestockRequest.objects.filter(
                _unclaimed(timezone.now()), status__in=RestockRequest.NOT_ACCEPTED
            )
            if _give_up(still_waiting, pk=pk, error=None):
                report.failed.append(pk)
        return
    report.placed.append(pk)


def abandon(*, body: str) -> None:
    """Staff discarded this dead depletion: its restock is not ordered again, and the product
    may deplete anew (so the next order that finds it empty restocks it)."""
    try:
        envelope = read_envelope(body)
    except UnreadableMessage:
        return
    pending = RestockRequest.objects.filter(status__in=RestockRequest.NOT_ACCEPTED)
    pk = pending.filter(depletion_key=envelope.event_id).values_list("pk", flat=True).first()
    if pk is not None and _give_up(pending, pk=pk, error="message discarded by staff"):
        return
    product_id = Product.objects.filter(sku=envelope.sku).values_list("pk", flat=True).first()
    if (
        product_id is not None
        and not RestockRequest.objects.filter(product_id=product_id).in_progress().exists()
    ):
        end_depletion(product_id=product_id)


def _give_up(requests: QuerySet[RestockRequest], *, pk: int, error: str | None) -> bool:
    """Fail restock `pk` for good if `requests` still holds it, and end the product's depletion.

    Without that, the product would stay sold out with nothing on its way and no new
    depletion: the next order that finds it empty now emits one.
    """
    changes: dict[str, Any] = {
        "status": RestockRequest.Status.FAILED,
        "next_attempt_at": None,
        "claimed_until": None,
        "updated_at": timezone.now(),
    }
    if error is not None:
        changes["last_error"] = error
    product_id = requests.filter(pk=pk).values_list("product_id", flat=True).first()
    if product_id is None:
        return False
    with transaction.atomic():
        # Product before request, the order in which order_restock locks them.
        Product.objects.select_for_update().filter(pk=product_id).first()
        if requests.filter(pk=pk).update(**changes) != 1:
            return False
        request = RestockRequest.objects.select_related("product").get(pk=pk)
        # Its units will not come: its pre-orders move or are cancelled, and the policy may
        # order the units again.
        give_up_batch(
            product_id=request.product_id, batch_id=batch_of(request), quantity=request.quantity
        )
        others = RestockRequest.objects.filter(product_id=request.product_id).in_progress()
        ended = not others.exists() and end_depletion(product_id=request.product_id)
    logger.error(
        "restock=%s sku=%s depletion=%s failed after %s re-orders (%s): needs staff; "
        "depletion ended=%s",
        request.pk,
        request.product.sku,
        request.depletion_key,
        request.reorders,
        request.last_error or "no error recorded",
        ended,
    )
    return True
