"""Reads of orders."""

from django.db.models import Prefetch

from shop.exceptions import UnknownOrder
from shop.models import Basket, Order


def receipt_get(*, reference: str) -> Order | Basket:
    """The order, or the basket, with this reference (a basket with its lines, their products
    and promises), or UnknownOrder."""
    order = Order.objects.select_related("product", "promise").filter(reference=reference).first()
    if order is not None:
        return order
    lines = Order.objects.select_related("product", "promise").order_by("pk")
    basket = Basket.objects.prefetch_related(Prefetch("lines", queryset=lines))
    found = basket.filter(reference=reference).first()
    if found is None:
        raise UnknownOrder()
    return found
