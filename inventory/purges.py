"""inventory's history, deleted once older than its retention (nudged.ops.purges runs it)."""

from datetime import datetime

from inventory.models import ReorderDecision, StockAdjustment
from nudged.core.purges import delete_in_batches


def purge_reorder_decisions(*, before: datetime) -> int:
    """Delete reorder decisions made before `before` that no restock request refers to."""
    return delete_in_batches(
        rows=ReorderDecision.objects.filter(created_at__lt=before, restock__isnull=True)
    )


def purge_stock_adjustments(*, before: datetime) -> int:
    """Delete stock adjustments (counts, arrivals) made before `before`."""
    return delete_in_batches(rows=StockAdjustment.objects.filter(created_at__lt=before))
