import hmac
import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from factory_bridge.services.dlq import dead_count
from factory_bridge.services.outbox import backlog
from factory_bridge.services.pollers import poller_status

logger = logging.getLogger(__name__)

OK, DOWN, FAILING, STALE, UNKNOWN = "ok", "down", "failing", "stale", "unknown"


def healthz(request: HttpRequest) -> JsonResponse:
    """Report the database (503 when down), the queues, the outbox and the pollers.

    Anyone gets one word per component; staff and holders of HEALTHZ_TOKEN also get the
    details (errors, endpoint, counts, heartbeats), which tell an attacker too much.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        outbox = backlog()
        dead = dead_count()
        pollers = poller_status()
    except DatabaseError as exc:
        logger.warning("health check: database down: %s", exc)
        words = {"database": DOWN, "queues": UNKNOWN, "outbox": UNKNOWN, "pollers": UNKNOWN}
        body: dict = {"status": DOWN, **words}
        if _sees_details(request, database_up=False):
            body["database"] = {"status": DOWN, "error": str(exc)}
        return JsonResponse(body, status=503)
    words = {
        "database": OK,
        # Dead messages wait in the DLQ for staff.
        "queues": FAILING if dead else OK,
        "outbox": FAILING if outbox.get("dead", 0) > 0 else OK,
        "pollers": OK if pollers and all(p["alive"] for p in pollers) else STALE,
    }
    status = OK if all(word == OK for word in words.values()) else "degraded"
    if not _sees_details(request, database_up=True):
        return JsonResponse({"status": status, **words})
    return JsonResponse(
        {
            "status": status,
            "database": {"status": words["database"]},
            "queues": {
                "status": words["queues"],
                "endpoint": settings.AWS_ENDPOINT_URL or "aws",
                "region": settings.AWS_DEFAULT_REGION,
                "events_enabled": settings.EVENTS_ENABLED,
                "dead_messages": dead,
            },
            "outbox": {"status": words["outbox"], **outbox},
            "pollers": {"status": words["pollers"], "loops": pollers},
        }
    )


def _sees_details(request: HttpRequest, *, database_up: bool) -> bool:
    token = settings.HEALTHZ_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode()):
        return True
    # Staff are known from their session, which lives in the database.
    return database_up and request.user.is_staff
