"""Alert emails through a real SMTP server: each recipient on its own, and outages outlived.

The server is aiosmtpd (the library behind the `make run` sink) with a handler that refuses
chosen recipients, as a mail provider answers an address that does not exist.
"""

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from inventory.alerts import send_due_mail
from inventory.models import Product, StockAlert, SuppressedAddress

pytestmark = pytest.mark.usefixtures("no_events")

REFUSED = "gone@example.com"
DEFERRED = "full@example.com"


class Provider:
    """Takes every recipient but two: one refused for good (550), one for now (452)."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 No such user"
        if address == DEFERRED:
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(settings) -> Iterator[Provider]:  # type: ignore[no-untyped-def]
    provider = Provider()
    port = free_port()
    controller = Controller(provider, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    yield provider
    controller.stop()


@pytest.fixture
def sold_out(product: Product) -> Product:
    Product.objects.filter(pk=product.pk).update(stock=0)
    return product


def due(product: Product, *emails: str, confirmed: bool = True) -> None:
    now = timezone.now()
    StockAlert.objects.bulk_create(
        StockAlert(
            product=product,
            email=email,
            mailbox=email,
            confirmed_at=now if confirmed else None,
            due_at=now,
            send_after=now,
        )
        for email in emails
    )


def state(email: str) -> StockAlert:
    return StockAlert.objects.get(email=email)


def test_a_refused_address_fails_alone_and_the_others_get_their_email(sold_out, smtp):
    due(sold_out, "a@example.com", REFUSED, DEFERRED, "b@example.com")

    assert send_due_mail() == 2

    assert smtp.delivered == ["a@example.com", "b@example.com"]
    gone = state(REFUSED)
    assert (gone.waiting, gone.notified_at) == (None, None)
    assert gone.failed_at is not None and "550" in gone.error
    assert SuppressedAddress.objects.get().mailbox == REFUSED
    assert SuppressedAddress.objects.get().reason == SuppressedAddress.Reason.BOUNCED
    # Refused for now: still owed, tried again later.
    full = state(DEFERRED)
    assert full.waiting and full.attempts == 1 and full.send_after > timezone.now()
    assert {state(e).notified_at is not None for e in ("a@example.com", "b@example.com")} == {True}


def test_a_refused_confirmation_suppresses_the_mailbox_too(sold_out, smtp):
    due(sold_out, REFUSED, "a@example.com", confirmed=False)

    assert send_due_mail() == 1

    assert smtp.delivered == ["a@example.com"]
    assert SuppressedAddress.objects.filter(mailbox=REFUSED).exists()


def test_notices_outlive_an_hour_of_smtp_outage_and_go_out_when_mail_is_back(sold_out, settings):
    due(sold_out, "a@example.com", "b@example.com")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 5

    # The mail server is down for an hour: every attempt fails and backs off.
    for _ in range(12):
        assert send_due_mail() == 0
        StockAlert.objects.update(
            due_at=timezone.now() - timedelta(hours=1), send_after=timezone.now()
        )
    assert StockAlert.objects.filter(waiting=True, attempts=12).count() == 2

    provider = Provider()
    controller = Controller(provider, hostname="127.0.0.1", port=settings.EMAIL_PORT)
    controller.start()
    try:
        assert send_due_mail() == 2
    finally:
        controller.stop()
    assert provider.delivered == ["a@example.com", "b@example.com"]
    assert StockAlert.objects.filter(notified_at__isnull=False).count() == 2


def test_the_back_off_doubles_and_is_capped(sold_out, settings):
    due(sold_out, "a@example.com")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 5
    delays = []
    for _ in range(7):
        before = timezone.now()
        send_due_mail()
        alert = state("a@example.com")
        delays.append(round((alert.send_after - before).total_seconds() / 30))
        StockAlert.objects.update(send_after=timezone.now())

    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_an_email_not_taken_within_the_give_up_time_fails_the_alert(sold_out, settings):
    due(sold_out, "a@example.com")
    StockAlert.objects.update(
        due_at=timezone.now() - timedelta(seconds=settings.ALERT_GIVE_UP_AFTER + 1)
    )

    assert send_due_mail() == 0

    alert = state("a@example.com")
    assert alert.waiting is None and alert.failed_at is not None
    assert "did not take it" in alert.error
