"""Back-in-stock alerts: one email per waiting address, however often or by whom sent."""

import threading

import pytest
from django.core import mail
from django.db import connection
from django.test import Client

from inventory import alerts
from inventory.alerts import send_back_in_stock, subscribe_alert, unsubscribe_url
from inventory.exceptions import InvalidEmail, UnknownSku
from inventory.models import Product, StockAlert

pytestmark = pytest.mark.usefixtures("no_events")


def test_an_address_already_waiting_keeps_its_one_alert(product):
    first = subscribe_alert(sku=product.sku, email="a@example.com")
    again = subscribe_alert(sku=product.sku, email="A@example.com")

    assert again.pk == first.pk
    assert StockAlert.objects.count() == 1


def test_bad_input_is_refused(product):
    with pytest.raises(InvalidEmail):
        subscribe_alert(sku=product.sku, email="nope")
    with pytest.raises(UnknownSku):
        subscribe_alert(sku="NOPE-1", email="a@example.com")


def test_each_waiting_address_gets_one_email_and_a_second_arrival_sends_nothing(product):
    subscribe_alert(sku=product.sku, email="a@example.com")
    subscribe_alert(sku=product.sku, email="b@example.com")

    assert send_back_in_stock(sku=product.sku) == 2
    assert send_back_in_stock(sku=product.sku) == 0

    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.com", "b@example.com"]
    assert "/alerts/unsubscribe/" in mail.outbox[0].body
    assert StockAlert.objects.filter(waiting=True).count() == 0
    assert StockAlert.objects.filter(notified_at__isnull=False).count() == 2


def test_a_notified_address_may_ask_again(product):
    subscribe_alert(sku=product.sku, email="a@example.com")
    send_back_in_stock(sku=product.sku)

    subscribe_alert(sku=product.sku, email="a@example.com")

    assert StockAlert.objects.filter(waiting=True).count() == 1
    assert send_back_in_stock(sku=product.sku) == 1


def test_a_thousand_addresses_go_in_batches(product, monkeypatch):
    StockAlert.objects.bulk_create(
        StockAlert(product=product, email=f"c{i}@example.com") for i in range(1000)
    )
    claims = []
    claim = alerts._claim_batch
    monkeypatch.setattr(alerts, "_claim_batch", lambda p: claims.append(claim(p)) or claims[-1])

    assert send_back_in_stock(sku=product.sku) == 1000

    assert [len(batch) for batch in claims] == [100] * 10 + [0]
    assert len({m.to[0] for m in mail.outbox}) == len(mail.outbox) == 1000


def test_smtp_down_leaves_the_unsent_waiting_and_a_retry_sends_only_them(product, monkeypatch):
    for i in range(3):
        subscribe_alert(sku=product.sku, email=f"d{i}@example.com")
    real = alerts._message
    calls = []

    def fail_second(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionRefusedError("SMTP down")
        return real(*args)

    monkeypatch.setattr(alerts, "_message", fail_second)
    with pytest.raises(ConnectionRefusedError):
        send_back_in_stock(sku=product.sku)
    assert len(mail.outbox) == 1
    assert StockAlert.objects.filter(waiting=True, claimed_until__isnull=True).count() == 2

    monkeypatch.setattr(alerts, "_message", real)
    assert send_back_in_stock(sku=product.sku) == 2
    assert sorted(m.to[0] for m in mail.outbox) == [f"d{i}@example.com" for i in range(3)]


@pytest.mark.django_db(transaction=True)
def test_two_senders_at_once_send_one_email_per_address(factory):
    product = Product.objects.create(
        sku="CP-1", name="Glazed", price=1000, stock=0, factory=factory
    )
    StockAlert.objects.bulk_create(
        StockAlert(product=product, email=f"e{i}@example.com") for i in range(300)
    )
    barrier = threading.Barrier(2)

    def send() -> None:
        try:
            barrier.wait()
            send_back_in_stock(sku=product.sku)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    recipients = [m.to[0] for m in mail.outbox]
    assert len(recipients) == len(set(recipients)) == 300


def test_the_unsubscribe_link_works_without_login_and_nothing_is_sent(product):
    alert = subscribe_alert(sku=product.sku, email="f@example.com")
    other = Product.objects.create(
        sku="CP-2", name="Cruller", price=1000, stock=0, factory=product.factory
    )
    subscribe_alert(sku=other.sku, email="f@example.com")

    response = Client().get(unsubscribe_url(alert).removeprefix("http://127.0.0.1:8000"))

    assert response.status_code == 302
    assert send_back_in_stock(sku=product.sku) + send_back_in_stock(sku=other.sku) == 0
    assert mail.outbox == []
    assert StockAlert.objects.filter(unsubscribed_at__isnull=False).count() == 2


def test_a_forged_unsubscribe_link_changes_nothing(product):
    subscribe_alert(sku=product.sku, email="g@example.com")

    response = Client().get("/alerts/unsubscribe/forged:token/", follow=True)

    assert "not valid" in response.content.decode()
    assert StockAlert.objects.filter(waiting=True).count() == 1
