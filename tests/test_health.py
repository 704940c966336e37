"""/healthz: 200 while the database answers, 503 when it does not; details only for staff
or with HEALTHZ_TOKEN."""

from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from factory_bridge.models import FailedMessage
from factory_bridge.services import outbox
from nudged.core.models import WorkerLease

pytestmark = pytest.mark.django_db

TOKEN = "h3alth-token-for-tests"
WORDS = {"status", "database", "queues", "outbox", "pollers"}


@pytest.fixture
def healthz_token(settings):  # type: ignore[no-untyped-def]
    settings.HEALTHZ_TOKEN = TOKEN


@pytest.fixture
def pollers_alive(db) -> None:  # type: ignore[no-untyped-def]
    for name in ("outbox", "restock", "dlq"):
        WorkerLease.objects.create(name=name, owner="o", heartbeat_at=timezone.now())


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_anonymous_callers_get_one_word_per_component(client, pollers_alive):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "queues": "ok",
        "outbox": "ok",
        "pollers": "ok",
    }


def test_a_wrong_or_missing_token_gets_the_words_only(client, healthz_token, pollers_alive):
    for headers in ({}, bearer("wrong"), bearer(""), {"HTTP_AUTHORIZATION": TOKEN}):
        body = client.get("/healthz", **headers).json()

        assert set(body) == WORDS
        assert all(isinstance(word, str) for word in body.values())


def test_no_token_configured_means_no_token_access(client, settings):
    settings.HEALTHZ_TOKEN = ""

    body = client.get("/healthz", **bearer("")).json()

    assert body["database"] == "ok"


def test_the_token_shows_the_details(client, healthz_token, pollers_alive, settings):
    response = client.get("/healthz", **bearer(TOKEN))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"status": "ok"}
    assert body["queues"]["endpoint"] == settings.AWS_ENDPOINT_URL
    assert body["queues"]["dead_messages"] == 0
    assert body["outbox"]["status"] == "ok"
    assert body["outbox"]["pending"] == 0
    assert {p["name"] for p in body["pollers"]["loops"]} == {"outbox", "restock", "dlq"}
    assert all(p["heartbeat_at"] for p in body["pollers"]["loops"])


def test_staff_see_the_details(client, admin_user, pollers_alive):
    client.force_login(admin_user)

    body = client.get("/healthz").json()

    assert body["queues"]["dead_messages"] == 0
    assert body["pollers"]["status"] == "ok"


def test_a_logged_in_customer_is_not_staff(client, django_user_model, pollers_alive):
    client.force_login(django_user_model.objects.create_user("customer", password="x"))

    assert client.get("/healthz").json()["pollers"] == "ok"


def test_dead_messages_stale_pollers_and_dead_outbox_events_are_named(client, monkeypatch):
    FailedMessage.objects.create(
        fingerprint="f-1", sqs_message_id="m-1", source_queue="q", dlq="dlq", body="{}"
    )
    WorkerLease.objects.create(name="restock", owner="", heartbeat_at=None)
    # The outbox reports events it gave up on as `dead`.
    monkeypatch.setattr("nudged.ops.views.backlog", lambda: {**outbox.backlog(), "dead": 2})

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "database": "ok",
        "queues": "failing",
        "outbox": "failing",
        "pollers": "stale",
    }


def test_database_down_tells_anonymous_callers_no_error_text(client, healthz_token):
    down = OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")

    with mock.patch.object(connection, "cursor", side_effect=down):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "down",
        "database": "down",
        "queues": "unknown",
        "outbox": "unknown",
        "pollers": "unknown",
    }
    assert "Can't connect" not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()


def test_database_down_shows_the_error_to_the_token(client, healthz_token):
    down = OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")

    with mock.patch.object(connection, "cursor", side_effect=down):
        response = client.get("/healthz", **bearer(TOKEN))

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"]["status"] == "down"
    assert "Can't connect" in body["database"]["error"]


def test_healthz_database_fails_mid_query(client):
    cursor = mock.MagicMock()
    cursor.__enter__.return_value.execute.side_effect = OperationalError(
        2013, "Lost connection to server during query"
    )

    with mock.patch.object(connection, "cursor", return_value=cursor):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["database"] == "down"


def test_database_works_again_after_the_patch(client):
    with mock.patch.object(connection, "cursor", side_effect=OperationalError("down")):
        assert client.get("/healthz").status_code == 503

    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_methods_other_than_get_and_head_get_405_not_the_csrf_page(method, pollers_alive):
    response = Client(enforce_csrf_checks=True).generic(method, "/healthz")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert b"CSRF" not in response.content


def test_head_is_answered(client, pollers_alive):
    assert client.head("/healthz").status_code == 200
