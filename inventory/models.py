from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Factory(models.Model):
    code = models.CharField(
        max_length=32, unique=True, help_text="Factory identifier, e.g. FF-500293"
    )
    name = models.CharField(max_length=100)
    manager_email = models.EmailField()

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "factories"

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Product(models.Model):
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)
    price = models.PositiveIntegerField(help_text="Price in KRW")
    factory = models.ForeignKey(Factory, on_delete=models.PROTECT, related_name="products")
    # The validators say in words what the check constraints below enforce.
    stock = models.IntegerField(
        default=0,
        validators=[MinValueValidator(0, "Stock cannot be negative.")],
        help_text="Units on hand in the warehouse",
    )
    restock_quantity = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1, "Restock quantity must be at least 1.")],
        help_text="Units ordered from the factory when the product runs out",
    )
    depleted_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Start of the current depletion; cleared when stock arrives. "
        "One depletion produces one stock.depleted event.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_not_negative"),
            models.CheckConstraint(
                condition=Q(restock_quantity__gte=1), name="product_restock_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    @property
    def in_stock(self) -> bool:
        return self.stock > 0


class StockAdjustment(models.Model):
    """An audited change of on-hand stock outside of orders: a physical count or an arrival."""

    class Reason(models.TextChoices):
        COUNT = "count", "Physical count"
        ARRIVAL = "arrival", "Factory arrival"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="adjustments")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    old_quantity = models.IntegerField()
    new_quantity = models.IntegerField()
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.product.sku}: {self.old_quantity} → {self.new_quantity}"
