"""factory_bridge's history, deleted once older than its retention (nudged.ops.purges runs it)."""

from datetime import datetime

from django.db.models import F, OuterRef, Q, Subquery

from factory_bridge.models import MessageFailure, RestockRequest
from nudged.core.purges import delete_in_batches

Status = RestockRequest.Status


def purge_restocks(*, before: datetime) -> int:
    """Delete restock requests that finished before `before`; return how many.

    Finished: the stock arrived, it was ordered again (overdue), or it failed and the sweep
    stopped trying. Each product's latest restock is kept whatever its age: the admin flags a
    product whose last restock failed, and that must not disappear with the row.
    """
    latest = RestockRequest.objects.filter(product=OuterRef("product")).order_by(
        "-created_at", "-id"
    )
    finished = Q(status__in=[Status.FULFILLED, Status.OVERDUE]) | Q(
        status=Status.FAILED, next_attempt_at__isnull=True
    )
    old = (
        RestockRequest.objects.filter(finished, updated_at__lt=before)
        .annotate(latest_id=Subquery(latest.values("pk")[:1]))
        .exclude(pk=F("latest_id"))
    )
    return delete_in_batches(rows=old)


def purge_message_failures(*, before: datetime) -> int:
    """Delete the consumers' notes on failed messages not updated since `before`.

    A message still being retried updates its note on every failure; one that died has its
    error copied to its failed-message row, which is kept.
    """
    return delete_in_batches(rows=MessageFailure.objects.filter(updated_at__lt=before))
