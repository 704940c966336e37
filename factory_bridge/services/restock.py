"""Restocking: depletion messages become factory orders; the factory's callback adds stock."""

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from time import monotonic
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from factory_bridge import events
from factory_bridge.exceptions import CallbackMismatch, ForgedCallback, UnreadableMessage
from factory_bridge.factory import FactoryError, ManufactureOrder, get_factory_client
from factory_bridge.messages import Envelope, read_envelope
from factory_bridge.models import RestockRequest
from factory_bridge.queues import QueueError, ReceivedMessage, SqsQueue
from factory_bridge.services import pollers
from factory_bridge.services.dlq import dead_letter, record_failure
from inventory.models import Product
from inventory.services import receive_stock

logger = logging.getLogger(__name__)

CALLBACK_SALT = "factory_bridge.callback"
REORDER_LEASE = "reorder-overdue"
REORDER_SEPARATOR = "/reorder-"
ORDERED, DUPLICATE, ABSORBED = "ordered", "duplicate", "absorbed"
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
    if envelope.event_type != events.STOCK_DEPLETED:
        raise UnreadableMessage(f"unexpected event type {envelope.event_type[:40]!r}")
    if not envelope.sku:
        raise UnreadableMessage("depletion names no SKU")
    if len(envelope.event_id) > EVENT_ID_MAX:
        raise UnreadableMessage(
            f"depletion event id longer than {EVENT_ID_MAX} characters: {envelope.event_id[:40]!r}…"
        )
    return order_restock(envelope=envelope, sqs_message_id=message.message_id)


def order_restock(*, envelope: Envelope, sqs_message_id: str) -> str:
    """Order once per depletion, and not at all while the product has an open request."""
    with transaction.atomic():
        product = (
            Product.objects.select_for_update().select_related("factory").filter(sku=envelope.sku)
        ).first()
        if product is None:
            raise UnreadableMessage(f"unknown SKU {envelope.sku!r} in depletion")
        request = RestockRequest.objects.filter(depletion_key=envelope.event_id).first()
        if request is not None and request.status not in (
            RestockRequest.Status.PENDING,
            RestockRequest.Status.FAILED,
        ):
            logger.info("duplicate depletion=%s restock=%s", envelope.event_id, request.pk)
            return DUPLICATE
        if request is None:
            open_request = RestockRequest.objects.filter(
                product=product, status__in=RestockRequest.OPEN
            ).first()
            if open_request is not None:
                logger.info(
                    "depletion=%s absorbed by open restock=%s sku=%s",
                    envelope.event_id,
                    open_request.pk,
                    product.sku,
                )
                return ABSORBED
            request = RestockRequest.objects.create(
                product=product,
                factory=product.factory,
                quantity=product.restock_quantity,
                depletion_key=envelope.event_id,
                sqs_message_id=sqs_message_id,
            )
        else:
            request.status = RestockRequest.Status.PENDING
            request.sqs_message_id = sqs_message_id
            request.save(update_fields=["status", "sqs_message_id", "updated_at"])
    place_factory_order(request)
    return ORDERED


def place_factory_order(request: RestockRequest) -> None:
    """Call the legacy factory for a pending request; FactoryError when it does not accept."""
    order = ManufactureOrder(
        product_id=request.product.sku,
        quantity=request.quantity,
        factory_id=request.factory.code,
        requester=settings.FACTORY_REQUESTER,
        callback_url=callback_url(request),
    )
    try:
        job_id = get_factory_client().order(order)
    except FactoryError as exc:
        RestockRequest.objects.filter(pk=request.pk).update(
            attempts=F("attempts") + 1, last_error=str(exc)[:2000], updated_at=timezone.now()
        )
        logger.warning("factory refused restock=%s sku=%s: %s", request.pk, order.product_id, exc)
        raise
    now = timezone.now()
    RestockRequest.objects.filter(pk=request.pk).update(
        status=RestockRequest.Status.REQUESTED,
        factory_job_id=job_id,
        requested_at=now,
        attempts=F("attempts") + 1,
        last_error="",
        updated_at=now,
    )
    logger.info(
        "factory order placed restock=%s sku=%s quantity=%s job=%s",
        request.pk,
        order.product_id,
        order.quantity,
        job_id,
    )


def receive_callback(*, token: str, body: Any) -> tuple[RestockRequest, bool]:
    """Add the restock to stock once; return (request, whether stock was added now)."""
    try:
        pk = signing.loads(token, salt=CALLBACK_SALT)
    except signing.BadSignature as exc:
        raise ForgedCallback("Callback token is not valid.") from exc
    with transaction.atomic():
        request = (
            RestockRequest.objects.select_for_update()
            .select_related("product", "factory")
            .filter(pk=pk)
            .first()
        )
        if request is None:
            raise ForgedCallback("Callback token names no restock request.")
        _check_echo(request, body)
        if request.status == RestockRequest.Status.FULFILLED:
            logger.info("callback replayed restock=%s: nothing added", request.pk)
            return request, False
        product = receive_stock(
            product_id=request.product_id,
            quantity=request.quantity,
            note=f"restock {request.pk} (factory job {request.factory_job_id or '?'})",
        )
        if request.status == RestockRequest.Status.OVERDUE:
            logger.warning("late callback for overdue restock=%s: stock added", request.pk)
        request.status = RestockRequest.Status.FULFILLED
        request.fulfilled_at = timezone.now()
        request.save(update_fields=["status", "fulfilled_at", "updated_at"])
        events.record(
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


def reorder_overdue() -> list[RestockRequest]:
    """Mark requests with no callback in time as overdue and order them again.

    Runs under a lease: two overlapping sweeps would otherwise both call the factory for
    the same pending reorder.
    """
    owner = uuid.uuid4().hex
    if not pollers.claim(REORDER_LEASE, owner):
        logger.info("overdue sweep already running elsewhere")
        return []
    try:
        reorders = [r for r in map(_reorder, _overdue_ids()) if r is not None]
        # Reorders the factory did not accept yet have no queue message behind them.
        retry = RestockRequest.objects.filter(
            status=RestockRequest.Status.PENDING, replaces__isnull=False
        ).select_related("product", "factory")
        for request in retry:
            with contextlib.suppress(FactoryError):
                place_factory_order(request)
    finally:
        pollers.release(REORDER_LEASE, owner)
    return reorders


def _overdue_ids() -> list[int]:
    cutoff = timezone.now() - timedelta(seconds=settings.FACTORY_CALLBACK_TIMEOUT)
    return list(
        RestockRequest.objects.filter(
            status=RestockRequest.Status.REQUESTED, requested_at__lt=cutoff
        ).values_list("pk", flat=True)
    )


def _reorder(pk: int) -> RestockRequest | None:
    with transaction.atomic():
        request = (
            RestockRequest.objects.select_for_update()
            .filter(pk=pk, status=RestockRequest.Status.REQUESTED)
            .first()
        )
        if request is None:
            return None
        request.status = RestockRequest.Status.OVERDUE
        request.save(update_fields=["status", "updated_at"])
        # Keyed on the original depletion, so the key stays short however often it repeats.
        root = request.depletion_key.split(REORDER_SEPARATOR)[0]
        reorder = RestockRequest.objects.create(
            product_id=request.product_id,
            factory_id=request.factory_id,
            quantity=request.quantity,
            depletion_key=f"{root}{REORDER_SEPARATOR}{request.pk}",
            replaces=request,
        )
    logger.warning(
        "restock=%s overdue (no callback after %ss): reordering as restock=%s",
        request.pk,
        settings.FACTORY_CALLBACK_TIMEOUT,
        reorder.pk,
    )
    return reorder
