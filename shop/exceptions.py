from dataclasses import dataclass
from typing import Any

from nudged.core.exceptions import DomainError
from shop.limits import describe_window


class OutOfStock(DomainError):
    """The order was refused and counted on the product; stock was not touched."""

    code = "out_of_stock"
    status = 409

    def __init__(self, *, sku: str, name: str, available: int, requested: int) -> None:
        super().__init__(
            f"Only {available} of {sku} in stock; {requested} requested."
            if available > 0
            else f"{sku} is sold out; {requested} requested."
        )
        self.sku = sku
        self.name = name
        self.available = available
        self.requested = requested

    def extra(self) -> dict[str, Any]:
        return {"available": self.available}


@dataclass(frozen=True)
class ShortLine:
    """A basket's line the shelf could not serve."""

    sku: str
    name: str
    requested: int
    available: int


class BasketShort(DomainError):
    """A basket was refused as a whole: these lines could not be served (each counted as a
    refusal on its product); no stock was taken for any line."""

    code = "out_of_stock"
    status = 409

    def __init__(self, lines: list[ShortLine]) -> None:
        short = ", ".join(
            f"{line.sku} (only {line.available} left, {line.requested} requested)"
            if line.available > 0
            else f"{line.sku} (sold out)"
            for line in lines
        )
        super().__init__(f"Not enough stock for this basket: {short}. Nothing was ordered.")
        self.lines = lines

    def extra(self) -> dict[str, Any]:
        return {
            "lines": [
                {"sku": line.sku, "requested": line.requested, "available": line.available}
                for line in self.lines
            ]
        }


class PurchaseLimitReached(DomainError):
    """The customer, or everyone at their client address, already bought as many of this
    donut as one window allows; `scope` says which of the two limits refused the order."""

    code = "purchase_limit"
    status = 409
    CUSTOMER = "customer"
    ADDRESS = "address"

    def __init__(
        self, *, sku: str, name: str, limit: int, window: int, bought: int, scope: str = CUSTOMER
    ) -> None:
        per = describe_window(window)
        super().__init__(
            f"One customer may buy {limit} of {sku} per {per}; you have bought {bought}."
            if scope == self.CUSTOMER
            else f"Orders from one address may buy {limit} of {sku} per {per}; "
            f"{bought} have been bought from yours."
        )
        self.sku = sku
        self.name = name
        self.limit = limit
        self.window = window
        self.bought = bought
        self.scope = scope

    def extra(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "scope": self.scope,
            "limit": self.limit,
            "window": self.window,
            "bought": self.bought,
        }


class UnknownOrder(DomainError):
    """No order has this reference; the answer does not say whether the id exists."""

    code = "unknown_order"
    status = 404

    def __init__(self) -> None:
        super().__init__("No order with that reference.")


class InvalidOrder(DomainError):
    """The order's body breaks its rules (shop.orders.clean_order); `errors` by field."""

    code = "invalid"
    status = 400

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(f"Invalid input: {', '.join(errors)}.")
        self.errors = errors

    def extra(self) -> dict[str, Any]:
        return {"errors": self.errors}
