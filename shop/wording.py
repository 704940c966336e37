"""What the storefront tells a customer whose order, or basket, was refused: one wording
for the one-donut form and the basket page alike."""

from inventory.exceptions import InventoryError
from nudged.core.exceptions import DomainError
from nudged.core.ratelimits import RateLimited
from shop.exceptions import BasketShort, InvalidOrder, OutOfStock, PurchaseLimitReached
from shop.limits import describe_window

# The order's fields by the label the storefront shows.
LABELS = {"sku": "Donut", "quantity": "Quantity", "email": "Email", "backorder": "Pre-order"}

# What an order on the storefront may be refused with, each said by `refusal`.
REFUSALS = (
    RateLimited,
    InvalidOrder,
    OutOfStock,
    BasketShort,
    PurchaseLimitReached,
    InventoryError,
)


def refusal(refused: DomainError) -> list[str]:
    """Why the order was refused, a message each (a basket's short lines one each)."""
    if isinstance(refused, RateLimited):
        return [f"Too many orders at once; try again in {refused.wait} s."]
    if isinstance(refused, InvalidOrder):
        problems = "; ".join(
            f"{LABELS.get(name, name)}: {' '.join(texts)}" for name, texts in refused.errors.items()
        )
        return [f"Your order could not be placed. {problems}"]
    if isinstance(refused, OutOfStock):
        return [short(name=refused.name, available=refused.available, requested=refused.requested)]
    if isinstance(refused, BasketShort):
        return ["Nothing was ordered: your basket has more than the shelf."] + [
            short(name=line.name, available=line.available, requested=line.requested)
            for line in refused.lines
        ]
    if isinstance(refused, PurchaseLimitReached):
        return [purchase_limit(refused)]
    return [refused.detail]


def short(*, name: str, available: int, requested: int) -> str:
    if available:
        return f"Sorry, only {available} {name} left; you asked for {requested}."
    return f"Sorry, {name} is sold out."


def purchase_limit(limited: PurchaseLimitReached) -> str:
    if limited.scope == PurchaseLimitReached.CUSTOMER:
        return (
            f"Sorry, one customer may buy {limited.limit} × {limited.name} at most "
            f"(you have {limited.bought})."
        )
    return (
        f"Sorry, orders from one address may buy {limited.limit} × {limited.name} "
        f"per {describe_window(limited.window)} at most ({limited.bought} bought from yours)."
    )
