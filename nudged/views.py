import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """Report the state of the database (503 when it is down)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = {"status": "ok"}
    except DatabaseError as exc:
        logger.warning("health check: database down: %s", exc)
        return JsonResponse(
            {"status": "down", "database": {"status": "down", "error": str(exc)}}, status=503
        )
    return JsonResponse({"status": "ok", "database": database})
