"""Reads of the catalog."""

from django.db.models import Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from inventory.exceptions import UnknownSku
from inventory.models import Product

# Statuses of factory_bridge.RestockRequest that mean "ordered, not arrived yet".
OPEN_RESTOCK = ("pending", "requested")


def product_list() -> QuerySet[Product]:
    """Products in SKU order with their factory and the restock on its way.

    `incoming` is the quantity ordered from the factory and not arrived yet;
    `restock_requested_at` is when the open restock was requested.
    """
    open_restock = Q(restock_requests__status__in=OPEN_RESTOCK)
    return (
        Product.objects.select_related("factory")
        .annotate(
            incoming=Coalesce(Sum("restock_requests__quantity", filter=open_restock), 0),
            restock_requested_at=Max("restock_requests__created_at", filter=open_restock),
        )
        .order_by("sku")
    )


def product_get(*, sku: str, with_restock: bool = True) -> Product:
    """One product by SKU, or UnknownSku; without `with_restock`, just the row and factory."""
    products = product_list() if with_restock else Product.objects.select_related("factory")
    product = products.filter(sku=sku).first()
    if product is None:
        raise UnknownSku(sku)
    return product
