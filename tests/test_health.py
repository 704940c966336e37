"""/healthz: 200 while the database answers, 503 when it does not."""

from unittest import mock

import pytest
from django.db import OperationalError, connection


@pytest.mark.django_db
def test_healthz_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_database_down(client):
    down = OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")

    with mock.patch.object(connection, "cursor", side_effect=down):
        response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"]["status"] == "down"
    assert "Can't connect" in body["database"]["error"]


@pytest.mark.django_db
def test_healthz_database_fails_mid_query(client):
    cursor = mock.MagicMock()
    cursor.__enter__.return_value.execute.side_effect = OperationalError(
        2013, "Lost connection to server during query"
    )

    with mock.patch.object(connection, "cursor", return_value=cursor):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["database"]["status"] == "down"


@pytest.mark.django_db
def test_database_works_again_after_the_patch(client):
    with mock.patch.object(connection, "cursor", side_effect=OperationalError("down")):
        assert client.get("/healthz").status_code == 503

    assert client.get("/healthz").status_code == 200
