from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from inventory.models import RestockStatus


class RestockRequestQuerySet(models.QuerySet["RestockRequest"]):
    def in_progress(self) -> "RestockRequestQuerySet":
        """Requests the system is still working on: ordered, or still to be ordered again."""
        return self.filter(
            models.Q(status__in=RestockRequest.OPEN)
            | models.Q(status=RestockRequest.Status.FAILED, next_attempt_at__isnull=False)
        )

    def retry_due(self, now: datetime) -> "RestockRequestQuerySet":
        """Requests the factory has not accepted whose next attempt is due."""
        return self.filter(status__in=RestockRequest.NOT_ACCEPTED, next_attempt_at__lte=now)


class RestockRequest(models.Model):
    """One order placed with the legacy factory for one depletion of a product."""

    Status = RestockStatus

    OPEN = (Status.PENDING, Status.REQUESTED)
    # The factory has not answered 201 for these; the overdue sweep orders them again.
    NOT_ACCEPTED = (Status.PENDING, Status.FAILED)

    product = models.ForeignKey(
        "inventory.Product", on_delete=models.PROTECT, related_name="restock_requests"
    )
    factory = models.ForeignKey(
        "inventory.Factory", on_delete=models.PROTECT, related_name="restock_requests"
    )
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    decision = models.OneToOneField(
        "inventory.ReorderDecision",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="restock",
        help_text="The reorder decision this request orders (one factory order per decision)",
    )
    depletion_key = models.CharField(
        max_length=100,
        unique=True,
        help_text="Event id of the depletion this request answers (idempotency key)",
    )
    replaces = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_by",
        help_text="The overdue request this one orders again",
    )
    factory_job_id = models.CharField("factory job ID", max_length=64, blank=True)
    sqs_message_id = models.CharField("SQS message ID", max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Calls to the factory")
    reorders = models.PositiveIntegerField(
        default=0,
        help_text="Orders the overdue sweep placed for this depletion (retries and re-orders); "
        "capped by FACTORY_MAX_REORDERS",
    )
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        default=timezone.now,
        help_text="When the sweep orders it again while the factory has not accepted it; "
        "empty once it stopped trying",
    )
    claimed_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A factory call for this request is under way until then; nobody else calls",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestockRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["product", "status"], name="restock_product_status"),
            models.Index(fields=["status", "next_attempt_at"], name="restock_retry_due"),
        ]

    def __str__(self) -> str:
        return f"Restock {self.pk} {self.product.sku} x{self.quantity} {self.status}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class MessageFailure(models.Model):
    """Why the consumer last failed to process a message (kept for the DLQ view)."""

    fingerprint = models.CharField(max_length=100, unique=True)
    sqs_message_id = models.CharField(max_length=100)
    queue = models.CharField(max_length=80)
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.fingerprint}: {self.error[:60]}"


class FailedMessage(models.Model):
    """A message that reached the dead-letter queue, kept for staff to inspect and redrive."""

    class Status(models.TextChoices):
        DEAD = "dead", "Dead (in the DLQ)"
        REDRIVEN = "redriven", "Redriven"
        DISCARDED = "discarded", "Discarded"

    fingerprint = models.CharField(
        max_length=100,
        unique=True,
        help_text="SNS message id of the envelope (or a hash of the body): stable across redrives",
    )
    sqs_message_id = models.CharField("SQS message ID", max_length=100, db_index=True)
    source_queue = models.CharField(max_length=80)
    dlq = models.CharField("DLQ", max_length=80)
    body = models.TextField()
    attributes = models.JSONField(default=dict)
    message_attributes = models.JSONField(default=dict)
    event_type = models.CharField(max_length=32, blank=True)
    sku = models.CharField("SKU", max_length=32, blank=True, db_index=True)
    receive_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DEAD)
    times_dead = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    redriven_at = models.DateTimeField(null=True, blank=True)
    discarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]
        # Viewing a dead message is not enough to send it back or delete it.
        permissions = [
            ("redrive_failedmessage", "Can redrive failed messages to their source queue"),
            ("discard_failedmessage", "Can discard failed messages from the DLQ"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type or 'message'} {self.sku} {self.sqs_message_id}"


class FactoryCallBucket(models.Model):
    """Calls to the legacy factory of one outcome whose duration fell in one histogram bucket.

    The calls happen in the cluster's processes, often on other hosts than the web servers
    that answer /metrics, so their histogram is kept here, where every web process reads it.
    """

    outcome = models.CharField(max_length=16, help_text="ok, or the kind of FactoryError")
    le = models.CharField(
        max_length=16, help_text="Upper bound of the bucket in seconds, as Prometheus writes it"
    )
    calls = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(default=0.0, help_text="Their durations added up")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["outcome", "le"], name="factorycallbucket_unique")
        ]

    def __str__(self) -> str:
        return f"{self.outcome} ≤ {self.le}s: {self.calls}"


class DlqJob(models.Model):
    """A redrive or discard staff asked for in the admin, run in the background by the cluster.

    A DLQ operation can take longer than a web request may (it searches the DLQ until it has
    been quiet for a while): the admin only queues it, and this row says where it stands and,
    once done, what came of it.
    """

    class Action(models.TextChoices):
        REDRIVE = "redrive", "Redrive"
        DISCARD = "discard", "Discard"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    action = models.CharField(max_length=16, choices=Action.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    messages = models.ManyToManyField(FailedMessage, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.TextField(blank=True, help_text="What the operation did, once it is over")
    # The admin message level of the outcome: success, warning or error.
    level = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "DLQ job"

    def __str__(self) -> str:
        return f"{self.get_action_display()} job {self.pk} ({self.status})"


class OrderTally(models.Model):
    """Completed orders counted once and for all, up to an order id (/metrics adds the rest).

    A scrape then counts only the orders placed since, not every order ever placed.
    """

    through_id = models.BigIntegerField(default=0, help_text="Orders up to this id are counted")
    orders = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.orders} orders through id {self.through_id}"
