"""Replenishment arithmetic: demand estimates, reorder points and order quantities.

Pure functions of numbers, so the policy can be read and tested on its own; the services
feed them the product's state under its row lock.
"""

from dataclasses import dataclass
from math import ceil, exp
from statistics import median

from inventory.models import Product

ADAPTIVE, AT_ZERO = Product.Mode.ADAPTIVE, Product.Mode.AT_ZERO


def demand_rate(*, previous: float, units: int, seconds: float, horizon: float) -> float:
    """Exponentially weighted units per second: `units` asked over the last `seconds`.

    The weight of the new window grows with its length, so refreshes that come late or
    early still forget the past at the same pace (`horizon` seconds).
    """
    if seconds <= 0:
        return previous
    weight = 1 - exp(-seconds / horizon) if horizon > 0 else 1.0
    return previous + weight * (units / seconds - previous)


# Lead times measured from callbacks that the estimate is the median of, and how many of them
# it takes before the estimate follows them alone.
LEAD_TIME_SAMPLES = 5
LEAD_TIME_QUORUM = 3


def lead_time(*, samples: list[float], previous: float) -> float:
    """The factory's lead time: the median of the last measured ones (`samples`, seconds).

    A median, so one outlier (a slow callback, a factory restart) moves nothing once three
    are measured. Until then `previous`, the estimate so far, fills the missing places: one
    first measurement alone does not replace it.
    """
    recent = samples[-LEAD_TIME_SAMPLES:]
    return float(median([*recent, *[previous] * (LEAD_TIME_QUORUM - len(recent))]))


def refused_demand_cap(*, purchase_limit: int, order_max: int) -> int:
    """Refused units one client may add to demand per purchase-limit window.

    What that client could have bought in the window: the purchase limit, or one order's
    worth without one. Beyond that a refusal is the same customer asking again.
    """
    return purchase_limit or order_max


def reorder_point(*, rate: float, lead_time: float, review: float, safety: float) -> int:
    """Units to hold on hand and on order to cover demand until an order placed now arrives.

    `review` covers the time until the next decision can see the stock move.
    """
    return ceil(rate * (lead_time + review) * (1 + safety))


@dataclass(frozen=True)
class Stock:
    """A product's numbers as the policy sees them."""

    mode: str
    on_hand: int
    on_order: int
    rate: float
    reorder_point: int
    review: float
    restock_quantity: int
    min_quantity: int
    max_quantity: int
    ceiling: int | None = None
    # Units on order promised to waiting pre-orders: demand already known.
    promised: int = 0

    @property
    def position(self) -> int:
        """Units on hand and on order that are nobody's yet: what guessed demand can draw on.

        Promised units are known demand, ordered one for one: they count against what is on
        order, so the safety margin (in the reorder point) covers only demand still guessed.
        """
        return self.on_hand + self.on_order - self.promised


@dataclass(frozen=True)
class Order:
    quantity: int
    reason: str


def needs_order(stock: Stock) -> bool:
    """The comparison the order path pays for: does this state call for a decision?"""
    if stock.on_hand <= 0 and stock.on_order == 0:
        return True
    return stock.mode == ADAPTIVE and stock.position < stock.reorder_point


def order(stock: Stock, *, capacity_left: int | None, promising: int = 0) -> Order | None:
    """How much to order now and why, or None; `capacity_left` None means no cap.

    `promising`: units a pre-order being placed needs from a new batch. They are known
    demand like the promised ones: the order holds them one for one, on top of what guessed
    demand calls for, or it is not made (None) when the bounds leave less room than that.
    """
    if not promising and not needs_order(stock):
        return None
    empty = stock.on_hand <= 0 and stock.on_order == 0
    # Free units: on hand and on order, less every unit promised (this pre-order's too).
    position = stock.position - promising
    if stock.mode == AT_ZERO:
        quantity = max(stock.restock_quantity, promising)
        reason = f"at zero: restock quantity {stock.restock_quantity}"
    else:
        # Up to the reorder point plus one review period of demand, so that the next
        # decision is not due right after this one.
        target = stock.reorder_point + ceil(stock.rate * stock.review)
        wanted = max(target - position, 0)
        quantity = min(max(wanted, stock.min_quantity, promising), stock.max_quantity)
        if empty and wanted == 0:
            reason = f"empty with nothing on order: minimum order {quantity}"
        else:
            reason = (
                f"{position} on hand and on order < reorder point {stock.reorder_point} "
                f"({stock.rate:.2f}/s): up to {target}"
            )
    if stock.promised or promising:
        reason += f" (net of {stock.promised + promising} promised)"
    if stock.ceiling is not None and stock.on_order + quantity > stock.ceiling:
        room = stock.ceiling - stock.on_order
        if room <= 0:
            return None
        reason += f"; capped by the ceiling of {stock.ceiling} on order"
        quantity = room
    if capacity_left is not None and quantity > capacity_left:
        if capacity_left <= 0:
            return None
        reason += f"; capped by factory capacity ({capacity_left} left)"
        quantity = capacity_left
    if quantity < promising:
        return None
    return Order(quantity=quantity, reason=reason[:200])
