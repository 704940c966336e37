import uuid

from django.db import models
from django.utils import timezone


class OutboxEvent(models.Model):
    """An event written in the transaction that made it true, published to SNS after commit."""

    class Topic(models.TextChoices):
        STOCK = "stock", "Stock events"
        SALES = "sales", "Sales events"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=16, choices=Topic.choices)
    event_type = models.CharField(max_length=32, db_index=True)
    subject = models.CharField(max_length=100, blank=True)
    body = models.JSONField()
    attributes = models.JSONField(help_text="SNS message attributes, all non-empty strings")
    sku = models.CharField(max_length=32, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    message_id = models.CharField(max_length=100, blank=True, help_text="SNS message id")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["published_at", "next_attempt_at"], name="outbox_due")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.sku} {self.id}"

    @property
    def is_published(self) -> bool:
        return self.published_at is not None
