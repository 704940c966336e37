import hmac
import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from factory_bridge.services.dlq import dead_count
from factory_bridge.services.outbox import backlog
from factory_bridge.services.pollers import poller_status
from nudged.ops.metrics import render as render_metrics

logger = logging.getLogger(__name__)

OK, DOWN, FAILING, STALE, UNKNOWN = "ok", "down", "failing", "stale", "unknown"


# Load balancers send no CSRF token: a method other than GET or HEAD gets a 405, not
# Django's CSRF page.
@csrf_exempt
@require_safe
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


# Prometheus sends no CSRF token: the token holder's POST gets a 405, anyone's a 404, never
# Django's CSRF page.
@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for `Authorization: Bearer $METRICS_TOKEN` only: a 404 to anyone else."""
    if not _bearer(request, settings.METRICS_TOKEN):
        raise Http404
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    body, content_type = render_metrics()
    return HttpResponse(body, content_type=content_type)


def _sees_details(request: HttpRequest, *, database_up: bool) -> bool:
    if _bearer(request, settings.HEALTHZ_TOKEN):
        return True
    # Staff are known from their session, which lives in the database.
    return database_up and request.user.is_staff


def _bearer(request: HttpRequest, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (never for an empty token)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(
        token and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
    )
