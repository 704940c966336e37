import secrets
from datetime import datetime

from django.db import models

from inventory.models import Product, Promise


def new_reference() -> str:
    return secrets.token_hex(16)


class Basket(models.Model):
    """Several donuts ordered at once, all or nothing: its lines are Order rows, one per
    product, each with its own unit price, sale and (for a pre-order) promise. A one-donut
    order has no basket."""

    reference = models.CharField(max_length=32, unique=True, default=new_reference, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Basket {self.reference}"

    # Read from its lines: fetch them with the basket (shop.selectors.receipt_get).
    @property
    def status(self) -> str:
        """Backordered until its last line is ready; cancelled when every line was."""
        statuses = {line.status for line in self.lines.all()}
        if Order.Status.BACKORDERED in statuses:
            return Order.Status.BACKORDERED
        if statuses == {Order.Status.CANCELLED}:
            return Order.Status.CANCELLED
        return Order.Status.COMPLETED

    @property
    def total_price(self) -> int:
        return sum(line.total_price for line in self.lines.all())

    @property
    def ready_by(self) -> datetime | None:
        """When its last waiting line is promised (None: nothing waits)."""
        waiting = [
            line.promise.ready_by
            for line in self.lines.all()
            if line.status == Order.Status.BACKORDERED and line.promise is not None
        ]
        return max(waiting, default=None)


class Order(models.Model):
    class Status(models.TextChoices):
        COMPLETED = "completed", "Completed"
        BACKORDERED = "backordered", "Waiting for the next batch"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected (out of stock)"

    class Channel(models.TextChoices):
        API = "api", "Sales API"
        WEB = "web", "Storefront"
        LEGACY = "legacy", "Original API (/checkout)"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.API)
    unit_price = models.PositiveIntegerField(help_text="Price in KRW when ordered")
    remaining_stock = models.IntegerField(help_text="Stock right after this order")
    customer = models.CharField(
        max_length=64,
        blank=True,
        help_text="Who ordered, for purchase limits: a keyed hash of the browser session, or "
        "of the client's address on the Sales API and /checkout",
    )
    address = models.CharField(
        max_length=64,
        blank=True,
        help_text="The client's address, as a keyed hash: every channel's orders from one "
        "address count against its purchase ceiling together",
    )
    # Order ids count up; a receipt is found by a reference nobody can guess from another.
    reference = models.CharField(max_length=32, unique=True, default=new_reference, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The order row is the sale's record and its outbox: the relay publishes orders.completed
    # for the orders still without this, many per SNS message, and then sets it.
    published_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When the sale went out to the ops feed"
    )

    promise = models.OneToOneField(
        Promise,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="order",
        help_text="A pre-order's promise of units from production",
    )
    fulfilled_at = models.DateTimeField(
        null=True, blank=True, help_text="When a pre-order was served from its batch"
    )
    basket = models.ForeignKey(
        Basket,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="lines",
        help_text="The basket this order is a line of, ordered with the others at once",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["product", "status"], name="order_product_status"),
            models.Index(fields=["customer", "product", "created_at"], name="order_customer"),
            models.Index(fields=["address", "product", "created_at"], name="order_address"),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} {self.product.sku} x{self.quantity} {self.status}"

    @property
    def total_price(self) -> int:
        return self.unit_price * self.quantity
