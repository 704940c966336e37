"""Reads of the catalog."""

from django.db.models import QuerySet

from inventory.exceptions import UnknownSku
from inventory.models import Product


def product_list() -> QuerySet[Product]:
    """Products in SKU order with their factory."""
    return Product.objects.select_related("factory").order_by("sku")


def product_get(*, sku: str) -> Product:
    """One product by SKU, or UnknownSku."""
    product = product_list().filter(sku=sku).first()
    if product is None:
        raise UnknownSku(sku)
    return product
