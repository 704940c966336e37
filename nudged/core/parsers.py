"""JSON request bodies read within limits, for the DRF endpoints and the original API alike."""

import json
import re
from collections.abc import Mapping
from typing import IO, Any, Protocol

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

# Far above the largest body an endpoint takes (a factory callback, well under 1 KB).
MAX_BODY_BYTES = 64 * 1024
# No endpoint takes more than two levels; json.loads recurses once per level and a
# deep enough body exhausts the stack (RecursionError).
MAX_DEPTH = 32

# A string (escapes skipped; an unterminated one runs to the end) or a bracket. Matching
# strings first keeps brackets inside them from counting, and every character is read once.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.?)*"?|[\[\]{}]', re.DOTALL)


class Body(Protocol):
    """What a body is read from: a request stream, or the request itself."""

    def read(self, size: int, /) -> bytes: ...


class BodyError(ValueError):
    """The request body is not one JSON document an endpoint can take."""


class BodyTooLarge(BodyError):
    pass


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = f"Request body is larger than {MAX_BODY_BYTES} bytes."


def read_body(stream: Body) -> bytes:
    """Read the body, refusing one larger than MAX_BODY_BYTES without reading the rest."""
    raw = stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes.")
    return raw


def parse_json(raw: bytes, *, encoding: str = "utf-8") -> Any:
    """Parse one JSON document; raise BodyError for bad text, bad JSON or deep nesting."""
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise BodyError(f"Request body is not {encoding} text.") from exc
    # Fewer brackets than the limit cannot nest past it: the common body skips the scan.
    if text.count("[") + text.count("{") > MAX_DEPTH and _nesting(text) > MAX_DEPTH:
        raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels.")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BodyError(f"JSON parse error - {exc}") from exc


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings, counted up to just past MAX_DEPTH."""
    depth = deepest = 0
    for token in _TOKEN.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class JsonParser(BaseParser):
    """DRF's JSON parser with a size and a nesting limit: 413 or 400, never a 500."""

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            return parse_json(read_body(stream), encoding=encoding)
        except BodyTooLarge as exc:
            raise RequestTooLarge() from exc
        except BodyError as exc:
            raise ParseError(str(exc)) from exc
