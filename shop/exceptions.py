from nudged.exceptions import DomainError
from shop.limits import describe_window


class OutOfStock(Exception):
    """The order was refused and counted on the product; stock was not touched."""

    code = "out_of_stock"
    status = 409

    def __init__(self, *, sku: str, name: str, available: int, requested: int) -> None:
        self.sku = sku
        self.name = name
        self.available = available
        self.requested = requested
        self.detail = f"Only {available} of {sku} in stock; {requested} requested."
        super().__init__(self.detail)


class PurchaseLimitReached(DomainError):
    """The customer already bought as many of this donut as one window allows."""

    code = "purchase_limit"
    status = 409

    def __init__(self, *, sku: str, name: str, limit: int, window: int, bought: int) -> None:
        self.sku = sku
        self.name = name
        self.limit = limit
        self.window = window
        self.bought = bought
        super().__init__(
            f"One customer may buy {limit} of {sku} per {describe_window(window)}; "
            f"you have bought {bought}."
        )
