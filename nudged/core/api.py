"""One place that turns domain errors and bad input into JSON responses."""

import json
import logging
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from nudged.core.exceptions import DomainError

logger = logging.getLogger(__name__)


# Accept headers that every API answer satisfies as it is (the API renders JSON only).
JSON_ACCEPTED = frozenset(("", "*/*", "application/json"))


class JsonFirstNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, without parsing the Accept header of a client that takes JSON."""

    def select_renderer(  # type: ignore[override]  # DRF passes a list (get_renderers)
        self, request: Any, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = renderers[0]
        if (
            renderer.media_type == "application/json"
            and not format_suffix
            and request.META.get("HTTP_ACCEPT", "") in JSON_ACCEPTED
            and self.settings.URL_FORMAT_OVERRIDE not in request.GET
        ):
            return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            {"code": exc.code, "detail": exc.detail, **exc.extra()},
            status=exc.status,
            headers=exc.headers(),
        )
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = ", ".join(errors)
        return Response(
            {"code": "invalid", "detail": f"Invalid input: {fields}.", "errors": errors},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
        return Response(
            {"code": "invalid", "detail": str(exc.detail), "errors": {"body": [str(exc.detail)]}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DatabaseError):
        logger.error("database unavailable: %s", exc)
        return Response(
            {"code": "unavailable", "detail": "The shop's database is unavailable; try again."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        response.data = {"code": exc.default_code, "detail": str(exc.detail)}
    return response


def json_response(data: Any, *, status: int, allow: str) -> HttpResponse:
    """`data` as DRF's JSONRenderer would answer it, for a request answered without DRF."""
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )
    response["Allow"] = allow
    return response


def error_response(exc: Exception, *, allow: str = "POST, OPTIONS") -> HttpResponse:
    """The API's answer to an error of a request answered without DRF: as exception_handler."""
    handled = exception_handler(exc, {})
    if handled is None:
        raise exc
    response = json_response(handled.data, status=handled.status_code, allow=allow)
    for name, value in handled.headers.items():
        if name.lower() != "content-type":
            response[name] = value
    return response


@csrf_exempt
def not_found(request: HttpRequest) -> JsonResponse:
    """Answer a path under /api/ that names no endpoint, pointing at the one a slash would."""
    detail = f"No API endpoint at {request.path}."
    slashed = f"{request.path_info}/"
    if not request.path_info.endswith("/") and resolve(slashed).func is not not_found:
        detail += f" The endpoint is {request.path}/ (with the trailing slash)."
    return JsonResponse({"code": "not_found", "detail": detail}, status=status.HTTP_404_NOT_FOUND)
