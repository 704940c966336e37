from typing import Any

from nudged.exceptions import DomainError


class OutOfStock(DomainError):
    """The order was refused and recorded as rejected; stock was not touched."""

    code = "out_of_stock"
    status = 409

    def __init__(self, *, order: Any, sku: str, available: int) -> None:
        super().__init__(f"Only {available} of {sku} in stock; {order.quantity} requested.")
        self.order = order
        self.sku = sku
        self.available = available

    def extra(self) -> dict[str, Any]:
        return {"available": self.available, "order_id": self.order.pk}
