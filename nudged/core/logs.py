"""Log lines: one format per deployment, one time zone (UTC), the ids in context, no tokens.

Every process formats its lines here: Django's and django-q2's loggers through LOGGING,
gunicorn's access and error logs through gunicorn.conf.py. No Django imports: gunicorn's
configuration uses this module before Django is loaded.

- `json`: one JSON object per line (production): `time`, `level`, `logger`, `message`, and
  the ids in context (`request_id`, `order_id`, `restock_id`, `sqs_message_id`) when set.
- `plain`: `<time> <level> <logger> <message> [<ids in context>]` (local, tests).

Times are UTC, ISO 8601 with their offset, whatever TIME_ZONE says: Django sets the
process's zone to TIME_ZONE in the processes that load it, not in the others.
"""

import logging
import logging.config
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# The token's first characters are kept, enough to tell two callbacks apart in a log. A
# token is URL-safe base64 and colons (django.core.signing); what follows the kept part is
# the signature.
KEPT = 8
_CALLBACK_TOKEN = re.compile(rf"(/factory/callbacks/)([\w:-]{{{KEPT}}})[\w:-]+")

FORMATS = ("json", "plain")
TRACES = ("exc_info", "stack_info")
# The record attribute (and JSON key) of each id log_context takes.
CONTEXT_FIELDS = {
    "request": "request_id",
    "order": "order_id",
    "restock": "restock_id",
    "sqs_message": "sqs_message_id",
}

# The ids of what this thread (or task) is handling; None outside any request or block.
_context: ContextVar[Mapping[str, str | int] | None] = ContextVar(
    "nudged_log_context", default=None
)


def redact(text: str) -> str:
    """Shorten every callback token in `text` to its first characters."""
    return _CALLBACK_TOKEN.sub(r"\1\2...", text)


class RedactCallbackTokens(logging.Filter):
    """Rewrite a record's message, traceback and stack with callback tokens shortened."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _ids(
    request: str | None, order: int | None, restock: int | None, sqs_message: str | None
) -> dict[str, str | int]:
    given = {"request": request, "order": order, "restock": restock, "sqs_message": sqs_message}
    return {CONTEXT_FIELDS[k]: v for k, v in given.items() if v is not None}


@contextmanager
def log_context(
    *,
    request: str | None = None,
    order: int | None = None,
    restock: int | None = None,
    sqs_message: str | None = None,
) -> Iterator[None]:
    """Add these ids to every line logged inside the block (and what it calls)."""
    token = _context.set({**(_context.get() or {}), **_ids(request, order, restock, sqs_message)})
    try:
        yield
    finally:
        _context.reset(token)


def add_to_log_context(*, order: int | None = None, restock: int | None = None) -> None:
    """Add ids to the context open now, for the rest of it (the request, the block).

    Outside any request or log_context it does nothing: nothing would ever take them away.
    """
    current = _context.get()
    if current is not None:
        _context.set({**current, **_ids(None, order, restock, None)})


def start_request_context(request_id: str) -> None:
    """Start a request's context: its id, and nothing left from an earlier request."""
    _context.set({CONTEXT_FIELDS["request"]: request_id})


def end_request_context() -> None:
    """End the request's context (once its response is closed, after the access line)."""
    _context.set(None)


class AddLogContext(logging.Filter):
    """Put the ids in context on each record, as attributes named by CONTEXT_FIELDS."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _context.get() or {}
        for name in CONTEXT_FIELDS.values():
            if name in ids and not hasattr(record, name):
                setattr(record, name, ids[name])
        return True


def utc_iso(created: float) -> str:
    """`created` (seconds since the epoch) as UTC ISO 8601 with its offset, to milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def utc_apache(now: float | None = None) -> str:
    """The time as the Apache log format writes it (gunicorn's access lines), in UTC."""
    return time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(now))


class PlainFormatter(logging.Formatter):
    """`<UTC time> <level> <logger> <message> [<ids in context>]`, then any traceback.

    With `fmt`, that format instead of the default (its `%(asctime)s` in UTC too).
    """

    default_format = "%(asctime)s %(levelname)s %(name)s %(message)s"

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt or self.default_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A warning's message ends with a newline; the ids stay on its line.
        line = super().formatMessage(record).rstrip()
        ids = [f"{f}={getattr(record, f)}" for f in CONTEXT_FIELDS.values() if hasattr(record, f)]
        return f"{line} [{' '.join(ids)}]" if ids else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time (UTC), level, logger, message, the ids in context.

    Also `exc_info` (the traceback) and `stack_info` when the record has them, and the
    extras a library adds that are plain values (Django's `status_code`), tokens shortened.
    Other extras are left out: Django's `request`, for one, is an object whose text is the
    path, callback token whole.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # Messages name donuts in Korean: kept readable.
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Extras are shown, unlike in plain lines, and RedactCallbackTokens did not see them;
        # nor the traceback, which python-json-logger renders again from `exc_info`.
        kept = {
            key: redact(value) if isinstance(value, str) else value
            for key, value in log_data.items()
            if value is None or isinstance(value, str | int | float | bool)
        }
        # The traceback last, after the ids, however long it is.
        return {k: v for k, v in kept.items() if k not in TRACES} | {
            k: kept[k] for k in TRACES if k in kept
        }


def formatter(log_format: str, *, fmt: str | None = None) -> logging.Formatter:
    """The formatter of `log_format` (json or plain); `fmt` replaces the plain default."""
    if log_format == "json":
        return JsonLineFormatter()
    return PlainFormatter(fmt)


def configure(config: dict[str, Any]) -> None:
    """Django's LOGGING_CONFIG: apply LOGGING, and send Python's warnings through it too.

    Django does not: a warning would be a line of its own on stderr, in no format, and no
    JSON.
    """
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING: every line through one handler, in `log_format`, redacted."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "lines": {"()": "nudged.core.logs.formatter", "log_format": log_format},
        },
        "filters": {
            "redact": {"()": "nudged.core.logs.RedactCallbackTokens"},
            "context": {"()": "nudged.core.logs.AddLogContext"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "lines",
                "filters": ["redact", "context"],
            }
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            # Django's own (django.request's 4xx warnings name the path, callback token
            # included) go through the redacting handler too, not Django's default ones.
            "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
            # django-q2's warnings and errors (at INFO it writes a line per task queued and per
            # task run). Configured here, it adds no handler of its own (local time, no date).
            "django-q": {"handlers": ["console"], "level": "WARNING", "propagate": False},
            "py.warnings": {"handlers": ["console"], "level": "WARNING", "propagate": False},
            **{
                app: {"handlers": ["console"], "level": level, "propagate": False}
                for app in ("shop", "inventory", "factory_bridge", "nudged")
            },
        },
    }
