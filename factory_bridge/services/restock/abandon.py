"""Restocks given up: at the re-order cap, or their depletion discarded by staff."""

import logging
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from factory_bridge.exceptions import UnreadableMessage
from factory_bridge.messages import read_envelope
from factory_bridge.models import RestockRequest
from factory_bridge.selectors import batch_of
from factory_bridge.services.restock.tracking import lock_product, track
from inventory.models import Product
from inventory.services import end_depletion, give_up_batch

logger = logging.getLogger(__name__)


def abandon(*, body: str) -> None:
    """Staff discarded this dead depletion: its restock is not ordered again, and the product
    may deplete anew (so the next order that finds it empty restocks it)."""
    try:
        envelope = read_envelope(body)
    except UnreadableMessage:
        return
    pending = RestockRequest.objects.filter(status__in=RestockRequest.NOT_ACCEPTED)
    pk = pending.filter(depletion_key=envelope.event_id).values_list("pk", flat=True).first()
    if pk is not None and give_up(pending, pk=pk, error="message discarded by staff"):
        return
    product_id = Product.objects.filter(sku=envelope.sku).values_list("pk", flat=True).first()
    if (
        product_id is not None
        and not RestockRequest.objects.filter(product_id=product_id).in_progress().exists()
    ):
        end_depletion(product_id=product_id)


def give_up(requests: QuerySet[RestockRequest], *, pk: int, error: str | None) -> bool:
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
        lock_product(product_id)
        # Two conditional UPDATEs: the first says whether it left production.
        in_production = (
            requests.filter(pk=pk, status=RestockRequest.Status.REQUESTED).update(**changes) == 1
        )
        if not in_production and requests.filter(pk=pk).update(**changes) != 1:
            return False
        request = RestockRequest.objects.select_related("product").get(pk=pk)
        track(
            product_id=request.product_id,
            restock_id=request.pk,
            status=request.status,
            incoming=-request.quantity if in_production else 0,
        )
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
