"""The rows every app shares: the outbox its changes are announced through, and the leases
that keep one process at a time on a job."""

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
    # Set when SNS kept refusing the event: the relay leaves it alone until staff retry it.
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Moved from factory_bridge with its table.
        db_table = "factory_bridge_outboxevent"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["published_at", "dead_at", "next_attempt_at"], name="outbox_due")
        ]
        permissions = [("retry_outboxevent", "Can retry dead outbox events")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.sku} {self.id}"

    @property
    def is_published(self) -> bool:
        return self.published_at is not None


class WorkerLease(models.Model):
    """Which poller process currently owns a long-polling loop, and when it last beat."""

    name = models.CharField(max_length=40, unique=True)
    owner = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Moved from factory_bridge with its table.
        db_table = "factory_bridge_workerlease"

    def __str__(self) -> str:
        return f"{self.name} ({self.owner or 'nobody'})"
