"""The storefront's basket: the donuts a customer gathers before ordering them at once, kept
in their session until they order (shop.orders.take_order, one basket order) or empty it.

The session comes back from the browser's cookie and the session store: what it holds is
checked every time it is read (its shape, ORDER_MAX_LINES, ORDER_MAX_QUANTITY, the catalog)
and whatever breaks a rule is dropped, never ordered.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from inventory.models import Product
from inventory.selectors import product_get
from shop.exceptions import InvalidOrder, ShortLine
from shop.orders import SKU_MAX_LENGTH, clean_order

SESSION_KEY = "basket"
# The lines the last refused order found short, shown once on the basket page.
SHORT_KEY = "basket_short"


@dataclass(frozen=True)
class BasketLine:
    product: Product
    quantity: int

    @property
    def price(self) -> int:
        return self.product.price * self.quantity


@dataclass(frozen=True)
class SessionBasket:
    """A basket's lines, in the order their donuts were first added."""

    lines: tuple[BasketLine, ...]

    @property
    def total(self) -> int:
        return sum(line.price for line in self.lines)

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)

    def items(self) -> list[dict[str, Any]]:
        """The lines as an order body's `items`."""
        return [{"sku": line.product.sku, "quantity": line.quantity} for line in self.lines]


def basket_get(session: SessionBase) -> SessionBasket:
    """The basket kept in `session`, its donuts read from the catalog; a donut no longer on
    it is left out."""
    stored = _stored(session)
    products = {p.sku.casefold(): p for p in Product.objects.filter(sku__in=list(stored))}
    return SessionBasket(
        tuple(
            BasketLine(product=products[sku.casefold()], quantity=quantity)
            for sku, quantity in stored.items()
            if sku.casefold() in products
        )
    )


def basket_units(session: SessionBase) -> int:
    """How many donuts the basket holds, from the session alone (the page header's count)."""
    return sum(_stored(session).values())


def basket_add(session: SessionBase, *, sku: str, quantity: int) -> BasketLine:
    """Add `quantity` of `sku` to the basket (to its line, when it has one already).

    InvalidOrder when the line would hold more than ORDER_MAX_QUANTITY or the basket more than
    ORDER_MAX_LINES lines; UnknownSku when no donut has that SKU.
    """
    order = clean_order({"sku": sku, "quantity": quantity})
    product = product_get(sku=order.sku)
    stored = _stored(session)
    key = _key(stored, product.sku)
    if key is None:
        if len(stored) >= settings.ORDER_MAX_LINES:
            raise InvalidOrder(
                {"items": [f"A basket holds {settings.ORDER_MAX_LINES} kinds of donut at most."]}
            )
        key = product.sku
    total = stored.get(key, 0) + order.quantity
    if total > settings.ORDER_MAX_QUANTITY:
        raise InvalidOrder(
            {
                "quantity": [
                    f"A basket holds {settings.ORDER_MAX_QUANTITY} of one donut at most; "
                    f"yours has {stored.get(key, 0)} {product.name}."
                ]
            }
        )
    stored[key] = total
    _save(session, stored)
    return BasketLine(product=product, quantity=total)


def basket_set(session: SessionBase, *, quantities: Mapping[str, int]) -> None:
    """Set the quantity of each line named in `quantities` (by SKU; 0 removes the line).
    A SKU the basket has no line for is ignored: a line is added by basket_add only.

    InvalidOrder when a quantity is below 0 or above ORDER_MAX_QUANTITY; nothing is changed.
    """
    stored = _stored(session)
    most = settings.ORDER_MAX_QUANTITY
    for sku, quantity in quantities.items():
        if not 0 <= quantity <= most:
            raise InvalidOrder({"quantity": [f"Choose from 0 to {most} of {sku}."]})
    for sku, quantity in quantities.items():
        key = _key(stored, sku)
        if key is None:
            continue
        if quantity:
            stored[key] = quantity
        else:
            del stored[key]
    _save(session, stored)


def basket_remove(session: SessionBase, *, sku: str) -> None:
    """Take the line of `sku` out of the basket (nothing when it has none)."""
    basket_set(session, quantities={sku: 0})


def basket_clear(session: SessionBase) -> None:
    session.pop(SESSION_KEY, None)
    session.pop(SHORT_KEY, None)


def basket_note_short(session: SessionBase, *, lines: list[ShortLine]) -> None:
    """Keep the lines a refused basket order found short, for the basket page to show."""
    session[SHORT_KEY] = [[line.sku, line.name, line.requested, line.available] for line in lines]


def basket_pop_short(session: SessionBase) -> dict[str, ShortLine]:
    """The short lines basket_note_short kept (by SKU casefolded), once."""
    kept = session.pop(SHORT_KEY, None)
    if not isinstance(kept, list):
        return {}
    short: dict[str, ShortLine] = {}
    for entry in kept:
        match entry:
            case [str(sku), str(name), int(requested), int(available)]:
                short[sku.casefold()] = ShortLine(sku, name, requested, available)
    return short


def _stored(session: SessionBase) -> dict[str, int]:
    """The session's basket as SKU → quantity, keeping only entries within the rules."""
    kept = session.get(SESSION_KEY)
    if not isinstance(kept, dict):
        return {}
    stored: dict[str, int] = {}
    for sku, quantity in kept.items():
        if len(stored) == settings.ORDER_MAX_LINES:
            break
        if (
            isinstance(sku, str)
            and 0 < len(sku) <= SKU_MAX_LENGTH
            and _key(stored, sku) is None
            and type(quantity) is int
            and 1 <= quantity <= settings.ORDER_MAX_QUANTITY
        ):
            stored[sku] = quantity
    return stored


def _key(stored: Mapping[str, int], sku: str) -> str | None:
    """The basket's key for `sku`: SKUs match whatever their case, as the catalog's do."""
    folded = sku.casefold()
    return next((key for key in stored if key.casefold() == folded), None)


def _save(session: SessionBase, stored: dict[str, int]) -> None:
    if stored:
        session[SESSION_KEY] = stored
    else:
        session.pop(SESSION_KEY, None)
