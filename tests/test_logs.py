"""Log lines: JSON under production settings, plain locally, in UTC, with the ids in context."""

import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import RequestFactory

from nudged.core.logs import (
    AddLogContext,
    JsonLineFormatter,
    PlainFormatter,
    RedactCallbackTokens,
    log_context,
)
from shop.models import Order
from tests.test_settings import COMPLETE, manage, run, settings_value

# What a signed callback token looks like: payload, timestamp, signature.
TOKEN = "MTIz:1vA3xQ:Zm9yZ2VkLXNpZ25hdHVyZS1ub3QtYS1yZWFsLW9uZQ"


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"while calling back /factory/callbacks/{TOKEN}/")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("shop.services", logging.WARNING, __file__, 1, message, args, exc_info)


def formatted(formatter: logging.Formatter, rec: logging.LogRecord) -> str:
    """`rec` through LOGGING's filters and `formatter`, as its handler writes it."""
    for log_filter in (RedactCallbackTokens(), AddLogContext()):
        log_filter.filter(rec)
    return formatter.format(rec)


def utc_now_within(seconds: float, value: str) -> bool:
    at = datetime.fromisoformat(value)
    return at.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - at) < timedelta(
        seconds=seconds
    )


# --- which format


def test_production_logs_json_and_local_tooling_plain_lines():
    assert settings_value("settings.LOG_FORMAT", **COMPLETE) == "'json'"
    assert settings_value("settings.LOG_FORMAT", **COMPLETE, LOG_FORMAT="plain") == "'plain'"
    local = {"DJANGO_SETTINGS_MODULE": "nudged.settings.local"}
    assert settings_value("settings.LOG_FORMAT", **local) == "'plain'"
    assert settings_value("settings.LOG_FORMAT", **local, LOG_FORMAT="json") == "'json'"


def test_an_unknown_log_format_stops_the_process_with_one_line():
    result = manage("check", **COMPLETE, LOG_FORMAT="xml")

    assert result.returncode == 1
    assert result.stderr == (
        "nudged.settings.production: LOG_FORMAT must be json or plain, not 'xml'.\n"
    )


PRODUCTION_REQUEST = f"""
import logging
import warnings

import nudged.wsgi
from django.test import Client

response = Client().post(
    "/factory/callbacks/{TOKEN}/", data="{{}}", content_type="application/json",
    secure=True, HTTP_HOST="shop.example.com", HTTP_X_REQUEST_ID="req-42",
)
print(response.status_code, response["X-Request-ID"])
logging.getLogger("django-q").warning("reincarnated worker Process-1")
warnings.warn("something is deprecated")
"""


def test_a_request_under_production_settings_logs_one_json_object_per_line():
    result = run([sys.executable, "-c", PRODUCTION_REQUEST], **COMPLETE)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "403 req-42\n"
    assert TOKEN[8:] not in result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert all(list(line)[:4] == ["time", "level", "logger", "message"] for line in lines)
    assert all(utc_now_within(60, line["time"]) for line in lines)
    by_logger = {line.pop("logger"): line for line in lines}
    for line in by_logger.values():
        del line["time"]
    assert by_logger["django.request"] == {
        "level": "WARNING",
        "message": f"Forbidden: /factory/callbacks/{TOKEN[:8]}.../",
        "status_code": 403,
        "request_id": "req-42",
    }
    assert by_logger["django-q"] == {
        "level": "WARNING",
        "message": "reincarnated worker Process-1",
    }
    # Python's warnings too, which would otherwise be lines of their own.
    assert "UserWarning: something is deprecated" in by_logger["py.warnings"]["message"]


# --- the formats


def test_a_json_line_is_utc_while_django_keeps_the_process_in_its_time_zone():
    line = formatted(JsonLineFormatter(), record("stock set sku=%s", "CP-502101"))

    assert time.strftime("%z") == "+0900"  # TIME_ZONE (Asia/Seoul), set by Django
    data = json.loads(line)
    assert list(data) == ["time", "level", "logger", "message"]
    assert data["message"] == "stock set sku=CP-502101"
    assert data["time"].endswith("+00:00")
    assert utc_now_within(5, data["time"])


def test_a_json_line_holds_the_ids_in_context_and_its_traceback_on_one_line():
    with log_context(request="req-1", order=7), log_context(restock=3, sqs_message="m-1"):
        line = formatted(JsonLineFormatter(), record("failed", exc=True))

    assert "\n" not in line
    data = json.loads(line)
    assert list(data) == [
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "order_id",
        "restock_id",
        "sqs_message_id",
        "exc_info",
    ]
    assert (data["request_id"], data["order_id"], data["restock_id"]) == ("req-1", 7, 3)
    assert data["sqs_message_id"] == "m-1"
    assert data["exc_info"].startswith("Traceback")


def test_callback_tokens_are_shortened_in_json_lines_traceback_included():
    rec = record("callback for /factory/callbacks/%s/ failed", TOKEN, exc=True)
    rec.request = RequestFactory().post(f"/factory/callbacks/{TOKEN}/")  # as Django adds it
    rec.path = f"/factory/callbacks/{TOKEN}/"  # an extra someone else adds

    line = formatted(JsonLineFormatter(), rec)

    data = json.loads(line)
    assert TOKEN[8:] not in line
    assert data["message"] == f"callback for /factory/callbacks/{TOKEN[:8]}.../ failed"
    assert data["path"] == f"/factory/callbacks/{TOKEN[:8]}.../"
    assert "request" not in data
    assert (
        f"RuntimeError: while calling back /factory/callbacks/{TOKEN[:8]}.../" in (data["exc_info"])
    )


def test_a_plain_line_is_utc_with_the_ids_in_context_after_the_message():
    with log_context(request="req-1", restock=3):
        line = formatted(PlainFormatter(), record("stock arrived restock=%s", 3))

    stamp, rest = line.split(" ", 1)
    assert utc_now_within(5, stamp)
    assert stamp.endswith("+00:00")
    assert rest == "WARNING shop.services stock arrived restock=3 [request_id=req-1 restock_id=3]"


def test_a_log_context_ends_with_its_block():
    with log_context(order=1):
        with log_context(order=2, restock=5):
            inner = formatted(PlainFormatter(), record("inner"))
        outer = formatted(PlainFormatter(), record("outer"))
    after = formatted(PlainFormatter(), record("after"))

    assert inner.endswith("inner [order_id=2 restock_id=5]")
    assert outer.endswith("outer [order_id=1]")
    assert after.endswith("after")


def test_the_local_settings_log_plain_lines():
    code = (
        "import logging, nudged.wsgi\n"
        "logging.getLogger('shop').warning('order refused sku=%s', 'CP-502101')\n"
    )
    result = run([sys.executable, "-c", code], DJANGO_SETTINGS_MODULE="nudged.settings.local")

    assert result.returncode == 0, result.stderr
    stamp, rest = result.stderr.rstrip("\n").split(" ", 1)
    assert utc_now_within(60, stamp)
    assert rest == "WARNING shop order refused sku=CP-502101"


# --- ids in context, from requests and orders


@pytest.mark.django_db
def test_a_request_id_is_answered_and_on_every_line_of_the_request(client, json_logs):
    response = client.get("/api/nothing-here/")

    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    [line] = json_logs()
    assert line["message"] == "Not Found: /api/nothing-here/"
    assert line["request_id"] == request_id
    assert client.get("/api/nothing-here/")["X-Request-ID"] != request_id


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("Root=1-67891233-abcdef012345678912345678", True),
        ("two words", False),
        ('quote"d', False),
        ("x" * 129, False),
        ("", False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_well_formed(client, json_logs, given, kept):
    response = client.get("/api/nothing-here/", HTTP_X_REQUEST_ID=given)

    request_id = response["X-Request-ID"]
    assert (request_id == given) is kept
    if not kept:
        assert len(request_id) == 32
    assert [line["request_id"] for line in json_logs()] == [request_id]


@pytest.mark.django_db
def test_an_order_placed_logs_its_order_id_and_the_context_ends_with_the_request(
    client, product, no_events, json_logs, caplog
):
    caplog.set_level(logging.DEBUG, logger="shop.services")

    response = client.post(
        "/api/orders/", {"sku": product.sku, "quantity": 1}, content_type="application/json"
    )
    logging.getLogger("shop").warning("after the request")

    assert response.status_code == 201
    order_id = Order.objects.get(reference=response.json()["reference"]).pk
    completed, after = json_logs()
    assert completed["message"].startswith(f"order completed order={order_id} ")
    assert completed["order_id"] == order_id
    assert completed["request_id"] == response["X-Request-ID"]
    assert after == {
        "time": after["time"],
        "level": "WARNING",
        "logger": "shop",
        "message": "after the request",
    }
