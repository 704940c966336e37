"""The factory's callback: a URL signed for one restock request adds its stock once."""

import logging
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from factory_bridge.exceptions import (
    CallbackForFailedRestock,
    CallbackMismatch,
    ExpiredCallback,
    ForgedCallback,
)
from factory_bridge.models import RestockRequest
from factory_bridge.selectors import batch_of
from factory_bridge.services.restock.tracking import lock_product, track
from inventory import events, outbox
from inventory.services import receive_stock
from nudged.core.logs import add_to_log_context

logger = logging.getLogger(__name__)

CALLBACK_SALT = "factory_bridge.callback"


def callback_token(request: RestockRequest) -> str:
    return signing.dumps(request.pk, salt=CALLBACK_SALT)


def callback_url(request: RestockRequest) -> str:
    return f"{settings.PUBLIC_BASE_URL}/factory/callbacks/{callback_token(request)}/"


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
        product_id = (
            RestockRequest.objects.filter(pk=restock_id).values_list("product_id", flat=True)
        ).first()
        if product_id is None:
            raise ForgedCallback("Callback token names no restock request.")
        lock_product(product_id)
        request = (
            RestockRequest.objects.select_for_update()
            .select_related("product", "factory", "decision")
            .get(pk=restock_id)
        )
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
        in_production = request.status == RestockRequest.Status.REQUESTED
        request.status = RestockRequest.Status.FULFILLED
        track(
            product_id=request.product_id,
            restock_id=request.pk,
            status=request.status,
            incoming=-request.quantity if in_production else 0,
        )
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
