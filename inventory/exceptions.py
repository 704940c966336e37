from typing import Any

from nudged.core.exceptions import DomainError


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


class AlertForProductInStock(InventoryError):
    code = "in_stock"
    status = 409

    def __init__(self, sku: str, name: str) -> None:
        super().__init__(f"{name} is in stock: order it now; alerts are for sold-out donuts.")
        self.sku = sku

    def extra(self) -> dict[str, Any]:
        return {"sku": self.sku}


class AddressSuppressed(InventoryError):
    code = "suppressed"
    status = 409

    def __init__(self, email: str) -> None:
        super().__init__(
            f"{email[:80]} unsubscribed from our email (or its server refused it): we send it "
            "nothing more, not even a confirmation. Staff can lift that on request."
        )


class AlertLimitReached(InventoryError):
    code = "throttled"
    status = 429

    def __init__(self, wait: int) -> None:
        super().__init__(
            "This mailbox has had as many confirmation emails from us as we send it for now; "
            f"try again in {wait} s."
        )
        self.wait = wait

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.wait)}


class InvalidAlertLink(InventoryError):
    code = "invalid_link"
    status = 404
