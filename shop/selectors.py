"""Reads of orders."""

from shop.exceptions import UnknownOrder
from shop.models import Order


def order_get(*, reference: str) -> Order:
    """The order with this reference, with its product, or UnknownOrder."""
    order = Order.objects.select_related("product", "promise").filter(reference=reference).first()
    if order is None:
        raise UnknownOrder()
    return order
