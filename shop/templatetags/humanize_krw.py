from django import template

from inventory.models import Product
from inventory.selectors import preorder_ready_in_seconds, ready_in_seconds

register = template.Library()


@register.filter
def krw(value: int) -> str:
    """Format a won amount with thousands separators: 19900 → 19,900."""
    return f"{int(value):,}"


@register.filter
def eta(seconds: int | None) -> str:
    """How soon a restock arrives, as the storefront says it (and shop/static/shop/live.js)."""
    return "due any moment" if not seconds else f"about {seconds} s"


@register.filter
def ready_in(product: Product) -> int | None:
    """Seconds until a `product_list` row's restock arrives (None: nothing on its way)."""
    return ready_in_seconds(product)


@register.filter
def preorder_ready_in(product: Product) -> int:
    """Seconds a pre-order of a `product_list` row placed now would wait, about."""
    return preorder_ready_in_seconds(product)
