"""History the shop stops needing: every app's purge, run together by the hourly `purge`.

Each purge lives in the app whose rows it deletes and is called as `purge(*, before)` with
the cutoff of its retention setting (days); adding one is one line in PURGES. Expired
sessions go first, through Django's own `clearsessions`.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError
from django.utils import timezone

from nudged.core.loading import load

logger = logging.getLogger(__name__)

# (purge function, the setting holding its retention in days). Restocks go before reorder
# decisions: a decision is kept while a restock refers to it.
PURGES: tuple[tuple[str, str], ...] = (
    ("factory_bridge.services.outbox.purge_published", "OUTBOX_RETENTION_DAYS"),
    ("factory_bridge.services.purges.purge_restocks", "RESTOCK_RETENTION_DAYS"),
    ("factory_bridge.services.purges.purge_message_failures", "MESSAGE_FAILURE_RETENTION_DAYS"),
    ("inventory.purges.purge_reorder_decisions", "REORDER_DECISION_RETENTION_DAYS"),
    ("inventory.purges.purge_stock_adjustments", "STOCK_ADJUSTMENT_RETENTION_DAYS"),
    ("inventory.alerts.purge_alerts", "ALERT_RETENTION_DAYS"),
)
SESSIONS = "sessions"


def purge_all(*, now: datetime | None = None) -> dict[str, int]:
    """Clear expired sessions and run every purge; return the rows each deleted.

    A purge that fails is logged and left for the next hour; the others still run. Sessions
    are counted as -1 (clearsessions does not say how many it deleted).
    """
    now = now or timezone.now()
    deleted: dict[str, int] = {}
    try:
        call_command("clearsessions")
        deleted[SESSIONS] = -1
    except DatabaseError:
        logger.exception("purge of expired sessions failed; the next run tries again")
    for path, setting in PURGES:
        before = now - timedelta(days=getattr(settings, setting))
        try:
            deleted[path] = load(path)(before=before)
        except DatabaseError:
            logger.exception("purge %s failed; the next run tries again", path)
            continue
        if deleted[path]:
            logger.info("purged %s rows: %s before=%s", deleted[path], path, before.isoformat())
    return deleted
