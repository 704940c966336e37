from django.db import models

from inventory.models import Product


class Order(models.Model):
    class Status(models.TextChoices):
        COMPLETED = "completed", "Completed"
        REJECTED = "rejected", "Rejected (out of stock)"

    class Channel(models.TextChoices):
        API = "api", "Sales API"
        WEB = "web", "Storefront"
        LEGACY = "legacy", "Original API (/checkout)"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.API)
    remaining_stock = models.IntegerField(help_text="Stock right after this order")
    customer = models.CharField(
        max_length=64,
        blank=True,
        help_text="Who ordered, for purchase limits: a hash of the browser session or the "
        "API client's address",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["product", "status"], name="order_product_status"),
            models.Index(fields=["customer", "product", "created_at"], name="order_customer"),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk} {self.product.sku} x{self.quantity} {self.status}"
