from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q


def default_lead_time() -> float:
    return settings.FACTORY_LEAD_TIME


def default_reorder_ceiling() -> int:
    return settings.REORDER_CEILING


class Factory(models.Model):
    code = models.CharField(
        max_length=32, unique=True, help_text="Factory identifier, e.g. FF-500293"
    )
    name = models.CharField(max_length=100)
    manager_email = models.EmailField()
    capacity = models.PositiveIntegerField(
        default=0,
        help_text="Most units this factory may have in production at once for us (0: no cap)",
    )
    lead_time = models.FloatField(
        default=default_lead_time,
        validators=[MinValueValidator(0)],
        help_text="Seconds from the factory accepting an order to its callback: the median "
        "of the last measured ones (starts at FACTORY_LEAD_TIME)",
    )
    lead_time_samples = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="The last lead times measured from callbacks, in seconds, oldest first",
    )
    reorder_ceiling = models.PositiveIntegerField(
        default=default_reorder_ceiling,
        validators=[MinValueValidator(1)],
        help_text="Most units a product of this factory may have on order, and highest "
        "reorder point, unless the product sets its own (starts at REORDER_CEILING)",
    )

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "factories"

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class RestockStatus(models.TextChoices):
    """Where an order placed with the factory stands (factory_bridge's restocks move through
    these; the product keeps its latest one's)."""

    PENDING = "pending", "Waiting for the factory"
    REQUESTED = "requested", "In production"
    FULFILLED = "fulfilled", "Stock arrived"
    OVERDUE = "overdue", "Overdue: no callback, ordered again"
    FAILED = "failed", "Failed: needs staff"


class Product(models.Model):
    class Mode(models.TextChoices):
        ADAPTIVE = "adaptive", "Adaptive (follows demand)"
        AT_ZERO = "at_zero", "At zero (restock quantity when sold out)"

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
        help_text="Units ordered from the factory when the product runs out (mode: at zero)",
    )
    replenishment_mode = models.CharField(
        max_length=16, choices=Mode.choices, default=Mode.ADAPTIVE
    )
    min_order_quantity = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Fewest units one adaptive factory order asks for",
    )
    max_order_quantity = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1)],
        help_text="Most units one adaptive factory order asks for",
    )
    purchase_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Units one customer may buy per purchase-limit window; empty: the "
        "shop's PURCHASE_LIMIT, 0: no limit",
    )
    reorder_ceiling = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most units on order at once, and highest reorder point, whatever demand "
        "says; empty: the factory's",
    )
    on_order = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Units ordered from the factory (decided) and not arrived yet",
    )
    promised = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Units on order promised to waiting pre-orders: known demand, never more "
        "than on order",
    )
    # What the factory bridge's restocks mean for the product, kept by them in the transaction
    # that moves each restock (inventory.services.restock_moved): the storefront and the
    # admin read them here.
    incoming = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Units the factory accepted to make and has not delivered (in production)",
    )
    restock_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the factory accepted the latest restock still in production",
    )
    restock_id = models.PositiveBigIntegerField(
        null=True, blank=True, editable=False, help_text="The product's latest restock"
    )
    restock_status = models.CharField(
        max_length=16,
        choices=RestockStatus.choices,
        blank=True,
        editable=False,
        help_text="Where the latest restock stands; empty: never restocked",
    )
    demand_rate = models.FloatField(
        default=0.0, editable=False, help_text="Units asked per second, sold or refused"
    )
    reorder_point = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Below this many units on hand and on order, more are ordered (adaptive)",
    )
    # Counters the order path bumps in the statements it runs anyway; the estimate refresh
    # reads their growth. Refused orders are counted here instead of written as rows.
    units_sold = models.PositiveBigIntegerField(default=0, editable=False)
    units_refused = models.PositiveBigIntegerField(default=0, editable=False)
    orders_refused = models.PositiveBigIntegerField(default=0, editable=False)
    orders_limited = models.PositiveBigIntegerField(default=0, editable=False)
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
            models.CheckConstraint(
                condition=Q(min_order_quantity__gte=1)
                & Q(max_order_quantity__gte=F("min_order_quantity")),
                name="product_order_quantity_bounds",
            ),
            models.CheckConstraint(
                condition=Q(promised__lte=F("on_order")), name="product_promised_on_order"
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


class DemandSnapshot(models.Model):
    """What the estimate refresh last read of a product's counters, and when."""

    product = models.OneToOneField(
        Product, on_delete=models.CASCADE, primary_key=True, related_name="snapshot"
    )
    units_sold = models.PositiveBigIntegerField(default=0)
    orders_refused = models.PositiveBigIntegerField(default=0)
    units_refused = models.PositiveBigIntegerField(default=0)
    orders_limited = models.PositiveBigIntegerField(default=0)
    taken_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.product_id} at {self.taken_at:%H:%M:%S}"


class RefusedDemand(models.Model):
    """Units one client was refused for lack of stock in one purchase-limit window.

    Counted as demand only up to what that client could have bought in the window, so a
    flood of refused orders weighs no more than one customer. `pending` is what the
    estimates loop has not folded into the demand rate yet.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    client = models.CharField(
        max_length=64, blank=True, help_text="Address or customer key; empty for internal callers"
    )
    window_start = models.DateTimeField()
    units = models.PositiveBigIntegerField(default=0, help_text="Units counted as demand")
    pending = models.PositiveBigIntegerField(default=0, help_text="Counted, not yet folded")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "client", "window_start"], name="refuseddemand_one_per_window"
            )
        ]
        indexes = [models.Index(fields=["window_start"], name="refuseddemand_window")]

    def __str__(self) -> str:
        return f"{self.product_id} {self.client[:8]} {self.units}"


class ReorderDecision(models.Model):
    """One decision to order more of a product, with the numbers behind it: a batch.

    Pre-orders are promised units of open batches (neither arrived nor given up), at most
    the batch's quantity.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="decisions")
    quantity = models.PositiveIntegerField()
    mode = models.CharField(max_length=16, choices=Product.Mode.choices)
    reason = models.CharField(max_length=200)
    on_hand = models.IntegerField()
    on_order = models.PositiveIntegerField(help_text="Units on order before this decision")
    demand_rate = models.FloatField(help_text="Units per second")
    lead_time = models.FloatField(help_text="Seconds")
    reorder_point = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    promised = models.PositiveIntegerField(
        default=0, help_text="Units of this batch promised to waiting pre-orders"
    )
    due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the batch is expected: decided, then accepted by the factory, plus "
        "the factory's lead time",
    )
    settled_at = models.DateTimeField(
        null=True, blank=True, help_text="When the batch arrived or production gave it up"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(promised__lte=F("quantity")), name="decision_promised_quantity"
            )
        ]
        indexes = [
            models.Index(fields=["product", "settled_at", "due_at"], name="decision_open_batch")
        ]

    def __str__(self) -> str:
        return f"Decision {self.pk} {self.product.sku} +{self.quantity}"


class Promise(models.Model):
    """Units of a batch promised to one pre-order, until the batch serves it or it is cancelled.

    The order it serves is the shop's: inventory knows the promise, and moves the order along
    through the PreOrders port the shop fills (inventory.promises).
    """

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for its batch"
        KEPT = "kept", "Kept: served from an arrival"
        CANCELLED = "cancelled", "Cancelled"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="promises")
    batch = models.ForeignKey(
        ReorderDecision,
        null=True,
        on_delete=models.SET_NULL,
        related_name="promises",
        help_text="The batch whose units are promised (the one that served it, once kept)",
    )
    quantity = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    ready_by = models.DateTimeField(help_text="The time promised: the batch due, plus a margin")
    reason = models.CharField(max_length=200, blank=True, help_text="Why it was cancelled")
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    # The customer's notice, by the back-in-stock alerts' mail path (inventory.alerts).
    email = models.EmailField(
        max_length=254, blank=True, help_text="Where to say that it is ready, or cancelled"
    )
    notice_after = models.DateTimeField(
        null=True, blank=True, help_text="An email is owed: next attempt at it"
    )
    notice_attempts = models.PositiveIntegerField(default=0)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["product", "state"], name="promise_product_state"),
            models.Index(fields=["state", "ready_by"], name="promise_state_ready_by"),
            models.Index(fields=["notice_after"], name="promise_notice_after"),
        ]

    def __str__(self) -> str:
        return f"Promise {self.pk} {self.product_id} x{self.quantity} {self.state}"


class StockAlert(models.Model):
    """A customer's request to hear, once, when a sold-out product is back.

    It is confirmed (double opt-in) before any back-in-stock email goes to its address; each
    email it is owed (the confirmation, then the alert) is due from `due_at` and sent by the
    notify loop, with back-off while the mail server fails.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="alerts")
    email = models.EmailField(help_text="The address as first given; emails go to it")
    # NULL only on rows a process of the release before this column wrote during a rollout.
    mailbox = models.CharField(  # noqa: DJ001 (see above)
        max_length=254,
        null=True,
        db_index=True,
        help_text="The address normalised (lower case, no +tag): variants are one subscription",
    )
    # True while waiting, NULL once done: MySQL has no partial unique index, but a unique
    # index lets any number of NULLs through, so only waiting requests are unique.
    waiting = models.BooleanField(null=True, default=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(
        null=True, blank=True, help_text="An email (confirmation or alert) is owed since then"
    )
    send_after = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Next attempt at the email owed"
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts at it")
    notified_at = models.DateTimeField(null=True, blank=True, db_index=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A sender is emailing this address until then; nobody else does",
    )
    claimed_by = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["product", "mailbox", "waiting"], name="stockalert_one_waiting"
            )
        ]
        indexes = [models.Index(fields=["product", "waiting"], name="stockalert_waiting")]

    def __str__(self) -> str:
        return f"{self.email} → {self.product.sku}"


class SuppressedAddress(models.Model):
    """A mailbox Nudged sends no more email to: it unsubscribed, or its server refused it."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Hard bounce"

    mailbox = models.CharField(max_length=254, unique=True, help_text="Normalised address")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "suppressed addresses"

    def __str__(self) -> str:
        return self.mailbox
