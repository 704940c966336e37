"""Admin login: repeated failures lock the username out from that address (django-axes)."""

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def staff(django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_superuser("boss", "boss@nudged.local", PASSWORD)


@pytest.fixture
def limit(settings) -> int:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    return 3


def log_in(client, password: str, ip: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    return client.post(LOGIN, {"username": "boss", "password": password}, REMOTE_ADDR=ip)


def logged_in(client) -> bool:  # type: ignore[no-untyped-def]
    return client.get("/admin/").status_code == 200


def test_the_right_password_logs_in(client, staff, limit):
    response = log_in(client, PASSWORD)

    assert response.status_code == 302
    assert logged_in(client)


def test_failed_logins_lock_out_even_the_right_password(client, staff, limit):
    answers = [log_in(client, "wrong").status_code for _ in range(limit)]

    assert answers == [200] * (limit - 1) + [429]
    response = log_in(client, PASSWORD)

    assert response.status_code == 429
    assert "too many login attempts" in response.content.decode()
    assert not logged_in(client)


def test_fewer_failures_than_the_limit_do_not_lock_out(client, staff, limit):
    for _ in range(limit - 1):
        log_in(client, "wrong")

    assert log_in(client, PASSWORD).status_code == 302


def test_the_lockout_holds_the_username_at_that_address_only(client, staff, limit):
    for _ in range(limit):
        log_in(client, "wrong", ip="10.0.0.1")

    assert log_in(client, PASSWORD, ip="10.0.0.2").status_code == 302


def test_axes_reset_unlocks(client, staff, limit):
    for _ in range(limit):
        log_in(client, "wrong")

    call_command("axes_reset")

    assert log_in(client, PASSWORD).status_code == 302


def test_behind_the_balancer_a_lockout_holds_the_client_address_not_the_staff_name(
    client, settings, staff
):
    settings.TRUSTED_PROXIES = ["10.0.0.0/16"]
    settings.AXES_FAILURE_LIMIT = 5
    balancer = "10.0.1.9"  # every request arrives from the load balancer

    def through_balancer(password: str, address: str):  # type: ignore[no-untyped-def]
        return client.post(
            LOGIN,
            {"username": "boss", "password": password},
            REMOTE_ADDR=balancer,
            HTTP_X_FORWARDED_FOR=address,
        )

    answers = [through_balancer("wrong", "203.0.113.66").status_code for _ in range(5)]

    assert answers == [200] * 4 + [429]
    assert through_balancer(PASSWORD, "203.0.113.66").status_code == 429
    assert through_balancer(PASSWORD, "198.51.100.20").status_code == 302
    assert AccessAttempt.objects.get().ip_address == "203.0.113.66"
