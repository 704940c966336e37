"""How the calls to the legacy factory went and how long they took, for /metrics.

Each call adds one to its bucket with a single upsert; the histogram is read back from the
database by whichever web process is scraped (nudged.ops.metrics).
"""

import logging
import math

from django.db import DatabaseError, connection

from factory_bridge.models import FactoryCallBucket

logger = logging.getLogger(__name__)

OK = "ok"
# The outcome of a call that raised something other than FactoryError (a bug, a bad setting).
ERROR = "error"
# Upper bounds in seconds: the factory answers in well under a second when healthy, and a
# call gives up after FACTORY_CONNECT_TIMEOUT + FACTORY_READ_TIMEOUT (13 s by default).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, math.inf)

UPSERT_SQL = (
    "INSERT INTO `factory_bridge_factorycallbucket` (`outcome`, `le`, `calls`, `seconds`) "
    "VALUES (%s, %s, 1, %s) "
    "ON DUPLICATE KEY UPDATE `calls` = `calls` + 1, `seconds` = `seconds` + VALUES(`seconds`)"
)


def bucket_label(bound: float) -> str:
    """The `le` label of a bucket bound, as Prometheus writes it ("0.05", "1.0", "+Inf")."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def record_call(*, outcome: str, seconds: float) -> None:
    """Count one factory call; never raises (losing a sample must not fail a restock)."""
    le = next(bound for bound in BUCKETS if seconds <= bound)
    try:
        with connection.cursor() as cursor:
            cursor.execute(UPSERT_SQL, [outcome[:16], bucket_label(le), max(seconds, 0.0)])
    except DatabaseError:
        logger.exception("could not count a factory call outcome=%s", outcome)


def call_histograms() -> dict[str, tuple[list[tuple[str, int]], float]]:
    """Per outcome: cumulative (le, calls) pairs ending with +Inf, and the sum of seconds."""
    rows: dict[str, list[tuple[float, int, float]]] = {}
    for outcome, le, calls, seconds in FactoryCallBucket.objects.values_list(
        "outcome", "le", "calls", "seconds"
    ):
        rows.setdefault(outcome, []).append((float(le), calls, seconds))
    histograms = {}
    for outcome, buckets in sorted(rows.items()):
        counts = {bound: 0 for bound in BUCKETS}
        total = 0.0
        for bound, calls, seconds in buckets:
            counts[bound] = counts.get(bound, 0) + calls
            total += seconds
        cumulative, running = [], 0
        for bound in sorted(counts):
            running += counts[bound]
            cumulative.append((bucket_label(bound), running))
        histograms[outcome] = (cumulative, total)
    return histograms
