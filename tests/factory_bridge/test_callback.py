"""POST /factory/callbacks/<token>/: only the factory's echo of our own order adds stock."""

import io
import json
import logging
import time
from collections.abc import Callable
from unittest import mock

import pytest
import yaml
from django.core import signing
from django.test import Client
from django.utils import timezone

from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.callback import callback_token
from inventory.models import Product, StockAdjustment
from nudged.core.logs import RedactCallbackTokens
from nudged.core.models import OutboxEvent
from tests.factory_bridge.factory import order_body

pytestmark = pytest.mark.django_db

SALT = "factory_bridge.callback"


@pytest.fixture
def restock(product: Product) -> RestockRequest:
    """A factory order in production for the sold-out CP-502101."""
    Product.objects.filter(pk=product.pk).update(stock=0)
    return RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=10,
        status=RestockRequest.Status.REQUESTED,
        depletion_key="depletion-1",
        factory_job_id="job-1",
        requested_at=timezone.now(),
    )


def echo(restock: RestockRequest, **changes: str) -> dict[str, str]:
    """The body the factory posts back: the order we sent it, unchanged."""
    url = f"http://testserver/factory/callbacks/{callback_token(restock)}/"
    return order_body(url, **changes)


def post(client: Client, token: str, body: str, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    return client.post(f"/factory/callbacks/{token}/", body, content_type=content_type)


def altered(token: str) -> str:
    """The token with its last character changed."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_the_factory_echo_adds_the_restock_once(client, restock):
    response = post(client, callback_token(restock), json.dumps(echo(restock)))

    assert response.status_code == 200
    assert response.json() == {
        "message": "입고 완료! 남은 재고: 10",
        "restock_id": restock.pk,
        "added": 10,
        "stock": 10,
    }
    restock.refresh_from_db()
    assert restock.status == RestockRequest.Status.FULFILLED
    assert OutboxEvent.objects.filter(event_type="stock.replenished").count() == 1


Case = Callable[[RestockRequest], tuple[str, str, str]]

FORGERIES: dict[str, tuple[Case, int, str]] = {
    "altered-token": (
        lambda r: (altered(callback_token(r)), json.dumps(echo(r)), "application/json"),
        403,
        "forbidden",
    ),
    "token-for-no-request": (
        lambda r: (signing.dumps(999999, salt=SALT), json.dumps(echo(r)), "application/json"),
        403,
        "forbidden",
    ),
    "token-signed-for-another-purpose": (
        lambda r: (signing.dumps(r.pk), json.dumps(echo(r)), "application/json"),
        403,
        "forbidden",
    ),
    "wrong-quantity": (
        lambda r: (
            callback_token(r),
            json.dumps(echo(r, MessageAttributeProductCnt="1000")),
            "application/json",
        ),
        400,
        "invalid",
    ),
    "wrong-product": (
        lambda r: (
            callback_token(r),
            json.dumps(echo(r, MessageAttributeProductId="CP-502102")),
            "application/json",
        ),
        400,
        "invalid",
    ),
    "wrong-factory": (
        lambda r: (
            callback_token(r),
            json.dumps(echo(r, MessageAttributeFactoryId="FF-000000")),
            "application/json",
        ),
        400,
        "invalid",
    ),
    "not-json": (lambda r: (callback_token(r), "stock=1000", "application/json"), 400, "invalid"),
    "json-array": (
        lambda r: (callback_token(r), json.dumps([echo(r)]), "application/json"),
        400,
        "invalid",
    ),
    "empty-body": (lambda r: (callback_token(r), "", "application/json"), 400, "invalid"),
    "form-encoded": (
        lambda r: (
            callback_token(r),
            "MessageAttributeProductCnt=10",
            "application/x-www-form-urlencoded",
        ),
        400,
        "invalid",
    ),
}


@pytest.mark.parametrize(("case", "status", "code"), FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_callback_changes_nothing(client, restock, case: Case, status: int, code: str):
    token, body, content_type = case(restock)

    response = post(client, token, body, content_type)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert response.json()["detail"]
    restock.refresh_from_db()
    assert restock.status == RestockRequest.Status.REQUESTED
    assert restock.fulfilled_at is None
    assert Product.objects.get(pk=restock.product_id).stock == 0
    assert not StockAdjustment.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_the_genuine_callback_still_works_after_forgeries(client, restock):
    for case, _, _ in FORGERIES.values():
        post(client, *case(restock))

    response = post(client, callback_token(restock), json.dumps(echo(restock)))

    assert response.status_code == 200
    assert response.json()["added"] == 10
    assert Product.objects.get(pk=restock.product_id).stock == 10


# --- the token is checked first, expires, and survives a key rotation


def test_a_forged_token_is_refused_before_the_body_is_read(client, restock):
    response = post(client, altered(callback_token(restock)), "{not json")

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_an_expired_token_is_refused(client, restock, settings):
    settings.FACTORY_CALLBACK_MAX_AGE = 3600
    issued = time.time() - 3601
    with mock.patch("django.core.signing.time.time", return_value=issued):
        token = callback_token(restock)

    response = post(client, token, json.dumps(echo(restock)))

    assert response.status_code == 403
    assert response.json()["code"] == "expired"
    assert Product.objects.get(pk=restock.product_id).stock == 0
    restock.refresh_from_db()
    assert restock.status == RestockRequest.Status.REQUESTED


def test_a_token_younger_than_the_max_age_works(client, restock, settings):
    settings.FACTORY_CALLBACK_MAX_AGE = 3600
    issued = time.time() - 3500
    with mock.patch("django.core.signing.time.time", return_value=issued):
        token = callback_token(restock)

    assert post(client, token, json.dumps(echo(restock))).status_code == 200


def test_the_default_max_age_outlasts_the_overdue_timeout(settings):
    assert settings.FACTORY_CALLBACK_MAX_AGE >= 10 * settings.FACTORY_CALLBACK_TIMEOUT


def test_a_token_signed_with_a_previous_key_works_while_it_is_a_fallback(client, restock, settings):
    settings.SECRET_KEY = "previous-key-" + "p" * 50
    token = callback_token(restock)
    settings.SECRET_KEY = "current-key-" + "c" * 50
    body = json.dumps(echo(restock))

    assert post(client, token, body).status_code == 403

    settings.SECRET_KEY_FALLBACKS = ["previous-key-" + "p" * 50]

    assert post(client, token, body).status_code == 200
    assert Product.objects.get(pk=restock.product_id).stock == 10


# --- what the request's state allows


def test_a_callback_for_a_failed_restock_is_refused(client, restock):
    RestockRequest.objects.filter(pk=restock.pk).update(status=RestockRequest.Status.FAILED)

    response = post(client, callback_token(restock), json.dumps(echo(restock)))

    assert response.status_code == 409
    assert response.json()["code"] == "restock_failed"
    assert Product.objects.get(pk=restock.product_id).stock == 0
    assert not StockAdjustment.objects.exists()
    assert not OutboxEvent.objects.exists()
    restock.refresh_from_db()
    assert restock.status == RestockRequest.Status.FAILED


def test_a_replayed_callback_answers_200_and_adds_nothing(client, restock):
    token, body = callback_token(restock), json.dumps(echo(restock))
    post(client, token, body)

    replay = post(client, token, body)

    assert replay.status_code == 200
    assert replay.json()["added"] == 0
    assert replay.json()["stock"] == 10
    assert Product.objects.get(pk=restock.product_id).stock == 10
    assert StockAdjustment.objects.count() == 1
    assert OutboxEvent.objects.filter(event_type="stock.replenished").count() == 1


# --- logs and schema


def test_django_logs_a_refused_callback_without_its_token(client, restock):
    token = altered(callback_token(restock))
    # The handler LOGGING gives Django's loggers (pytest adds its own capturing ones).
    [handler] = [
        h
        for h in logging.getLogger("django").handlers
        if any(isinstance(f, RedactCallbackTokens) for f in h.filters)
    ]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        post(client, token, json.dumps(echo(restock)))
    finally:
        handler.setStream(previous)

    logged = stream.getvalue()
    assert "Forbidden: /factory/callbacks/" in logged
    assert token not in logged
    assert f"/factory/callbacks/{token[:8]}.../" in logged


def test_the_schema_documents_every_answer_of_the_callback(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)

    [operation] = schema["paths"]["/factory/callbacks/{token}/"].values()

    assert set(operation["responses"]) == {"200", "400", "403", "409"}
