class InventoryError(Exception):
    code = "inventory_error"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownSku(InventoryError):
    code = "unknown_sku"
    status = 404

    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku!r}.")
        self.sku = sku


class InvalidQuantity(InventoryError):
    code = "invalid"
    status = 400
