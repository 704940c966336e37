from typing import Any

from nudged.exceptions import DomainError
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


class PurchaseLimitReached(DomainError):
    """The customer already bought as many of this donut as one window allows."""

    code = "purchase_limit"
    status = 409

    def __init__(self, *, sku: str, name: str, limit: int, window: int, bought: int) -> None:
        super().__init__(
            f"One customer may buy {limit} of {sku} per {describe_window(window)}; "
            f"you have bought {bought}."
        )
        self.sku = sku
        self.name = name
        self.limit = limit
        self.window = window
        self.bought = bought

    def extra(self) -> dict[str, Any]:
        return {"limit": self.limit, "window": self.window, "bought": self.bought}


class UnknownOrder(DomainError):
    """No order has this reference; the answer does not say whether the id exists."""

    code = "unknown_order"
    status = 404

    def __init__(self) -> None:
        super().__init__("No order with that reference.")
