"""JSON bodies within limits: every JSON endpoint answers a bad body with a 4xx, never a 500."""

import io
import json

import pytest
from django.test import Client
from django.utils import timezone

from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.callback import callback_token
from inventory.models import Product
from nudged.core.parsers import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    BodyError,
    BodyTooLarge,
    parse_json,
    read_body,
)
from shop.models import Order

pytestmark = pytest.mark.usefixtures("no_events")

# The body from the report: larger than the limit, so refused before it is parsed.
REPORTED = b"[" * 100_000
# Within the size limit, but nested far past the stack of json.loads.
DEEP = b"[" * 50_000
DEEP_OBJECT = b'{"a": ' * 5_000 + b"1" + b"}" * 5_000
DEEP_IN_A_FIELD = b'{"sku": "CP-502101", "quantity": 1, "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
LARGE = json.dumps({"sku": "CP-502101", "quantity": 1, "pad": "x" * MAX_BODY_BYTES}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * (MAX_DEPTH + 1), id="open-brackets"),
        pytest.param(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), id="deep-but-valid"),
        pytest.param(DEEP_OBJECT, id="deep-objects"),
        pytest.param(b"{bad", id="malformed"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b'{"quantity": NaN}', id="nan"),
        pytest.param(b"", id="empty"),
    ],
)
def test_parse_json_refuses(raw):
    with pytest.raises(BodyError):
        parse_json(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
            json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH),
            id="as-deep-as-allowed",
        ),
        pytest.param(
            json.dumps({"s": "[" * 100 + '"{' * 100}).encode(),
            {"s": "[" * 100 + '"{' * 100},
            id="brackets-in-strings-do-not-nest",
        ),
        pytest.param('{"name": "부산도너츠"}'.encode(), {"name": "부산도너츠"}, id="utf8"),
    ],
)
def test_parse_json_takes(raw, expected):
    assert parse_json(raw) == expected


def test_an_unterminated_string_is_scanned_once():
    """Escaped quotes with no closing quote would make a naive scan quadratic."""
    raw = b'"' + b'\\"' * (MAX_BODY_BYTES // 2 - 1)

    with pytest.raises(BodyError):
        parse_json(raw)


def test_read_body_stops_past_the_limit():
    stream = io.BytesIO(b"x" * (MAX_BODY_BYTES * 4))

    with pytest.raises(BodyTooLarge):
        read_body(stream)
    assert stream.tell() == MAX_BODY_BYTES + 1


def _post(client: Client, url: str, body: bytes, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    return client.post(url, body, content_type=content_type)


@pytest.fixture
def quiet_client() -> Client:
    """A client that answers a server error as a 500 instead of raising it in the test."""
    return Client(raise_request_exception=False)


@pytest.mark.parametrize(
    "body", [DEEP, DEEP_OBJECT, DEEP_IN_A_FIELD], ids=["brackets", "objects", "in-a-field"]
)
def test_orders_answer_a_deep_body_with_400(quiet_client, product, body):
    response = _post(quiet_client, "/api/orders/", body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert f"deeper than {MAX_DEPTH}" in payload["errors"]["body"][0]
    assert not Order.objects.exists()


@pytest.mark.parametrize("body", [LARGE, REPORTED], ids=["large", "reported"])
def test_orders_answer_a_large_body_with_413(quiet_client, product, body):
    response = _post(quiet_client, "/api/orders/", body)

    assert response.status_code == 413
    assert response.json() == {
        "code": "too_large",
        "detail": f"Request body is larger than {MAX_BODY_BYTES} bytes.",
    }
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (DEEP, "잘못된 요청: JSON 본문이 아닙니다"),
        (DEEP_OBJECT, "잘못된 요청: JSON 본문이 아닙니다"),
        (LARGE, "잘못된 요청: 본문이 너무 큽니다"),
        (REPORTED, "잘못된 요청: 본문이 너무 큽니다"),
    ],
    ids=["brackets", "objects", "large", "reported"],
)
def test_checkout_answers_a_bad_body_in_its_own_style(quiet_client, product, body, message):
    response = _post(quiet_client, "/checkout", body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"message": message}
    assert message.encode() in response.content
    product.refresh_from_db()
    assert product.stock == 3
    assert not Order.objects.exists()


@pytest.fixture
def restock(product: Product) -> RestockRequest:
    return RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        status=RestockRequest.Status.REQUESTED,
        depletion_key="depletion-1",
        factory_job_id="job-1",
        requested_at=timezone.now(),
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [(DEEP, 400), (DEEP_OBJECT, 400), (LARGE, 413), (REPORTED, 413)],
    ids=["brackets", "objects", "large", "reported"],
)
def test_factory_callback_answers_a_bad_body_with_4xx(quiet_client, restock, body, status):
    response = _post(quiet_client, f"/factory/callbacks/{callback_token(restock)}/", body)

    assert response.status_code == status
    restock.refresh_from_db()
    assert restock.status == RestockRequest.Status.REQUESTED
    restock.product.refresh_from_db()
    assert restock.product.stock == 3
