"""Deleting history in small statements, for every app's purge (nudged.ops.purges runs them)."""

from django.db.models import QuerySet

# Rows per DELETE statement: each is short, so no purge holds locks orders wait on for long.
BATCH_SIZE = 1000


def delete_in_batches(*, rows: QuerySet, batch_size: int = BATCH_SIZE) -> int:
    """Delete the rows a few at a time, each batch its own statement; return how many."""
    deleted = 0
    while pks := list(rows.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        deleted += rows.model.objects.filter(pk__in=pks).delete()[1].get(rows.model._meta.label, 0)
        if len(pks) < batch_size:
            break
    return deleted
