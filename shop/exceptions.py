from typing import Any


class OutOfStock(Exception):
    """The order was refused and recorded as rejected; stock was not touched."""

    code = "out_of_stock"
    status = 409

    def __init__(self, *, order: Any, sku: str, available: int) -> None:
        self.order = order
        self.sku = sku
        self.available = available
        self.detail = f"Only {available} of {sku} in stock; {order.quantity} requested."
        super().__init__(self.detail)
