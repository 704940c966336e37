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
