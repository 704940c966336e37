"""Each request's id: on every line logged for it, and in its response's X-Request-ID."""

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponseBase

from nudged.core.logs import end_request_context, start_request_context

HEADER = "X-Request-ID"
# What an id from a proxy or client may be: no spaces or quotes to forge a log line with.
WELL_FORMED = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id(request: HttpRequest) -> str:
    """The caller's X-Request-ID when it is well-formed, else a new one."""
    given = request.headers.get(HEADER, "")
    return given if WELL_FORMED.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Start the request's log context with its id, and answer with the id.

    The context ends once the response is closed (request_finished), not here: Django logs
    a 4xx or 5xx answer after the middleware returns it, and gunicorn writes its access
    line after that; both carry the ids.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        rid = request_id(request)
        start_request_context(rid)
        response = self.get_response(request)
        response[HEADER] = rid
        return response


def _end_request_context(**kwargs: Any) -> None:
    end_request_context()


request_finished.connect(_end_request_context, dispatch_uid="nudged.end_request_context")
