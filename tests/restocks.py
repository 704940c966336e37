"""Restock requests planted by hand, with their product's row as the restock services keep it."""

from django.db.models import F

from factory_bridge.models import RestockRequest
from inventory.models import Product


def plant_restock(
    product: Product, status: str, *, quantity: int = 10, **fields: object
) -> RestockRequest:
    """A restock at `status`, the product's latest; in production (requested), its units and
    its acceptance are on the product's row."""
    request = RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=quantity,
        status=status,
        **{"depletion_key": f"depletion-{product.sku}-{status}-{quantity}", **fields},
    )
    changes: dict[str, object] = {"restock_id": request.pk, "restock_status": status}
    if status == RestockRequest.Status.REQUESTED:
        changes["incoming"] = F("incoming") + quantity
        changes["restock_requested_at"] = request.requested_at
    Product.objects.filter(pk=product.pk).update(**changes)
    return request
