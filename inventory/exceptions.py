from typing import Any

from nudged.exceptions import DomainError


class InventoryError(DomainError):
    code = "inventory_error"


class UnknownSku(InventoryError):
    code = "unknown_sku"
    status = 404

    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku!r}.")
        self.sku = sku

    def extra(self) -> dict[str, Any]:
        return {"sku": self.sku}


class InvalidQuantity(InventoryError):
    code = "invalid"


class InvalidNote(InventoryError):
    code = "invalid"

    def __init__(self, *, length: int, longest: int) -> None:
        super().__init__(f"The note is {length} characters long; at most {longest} are kept.")
        self.length = length
        self.longest = longest

    def extra(self) -> dict[str, Any]:
        return {"length": self.length, "longest": self.longest}


class InvalidEmail(InventoryError):
    code = "invalid"

    def __init__(self, email: str) -> None:
        super().__init__(f"{email[:80]!r} is not an email address.")
