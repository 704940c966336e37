import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

from factory_bridge.services.outbox import backlog
from factory_bridge.services.pollers import poller_status

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """Report the database (503 when down), the AWS endpoint, the outbox backlog and pollers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        outbox = backlog()
        pollers = poller_status()
    except DatabaseError as exc:
        logger.warning("health check: database down: %s", exc)
        return JsonResponse(
            {"status": "down", "database": {"status": "down", "error": str(exc)}}, status=503
        )
    return JsonResponse(
        {
            "status": "ok",
            "database": {"status": "ok"},
            "aws": {
                "endpoint": settings.AWS_ENDPOINT_URL or "aws",
                "region": settings.AWS_DEFAULT_REGION,
                "events_enabled": settings.EVENTS_ENABLED,
            },
            "outbox": outbox,
            "pollers": pollers,
        }
    )
