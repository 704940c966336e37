"""Back-in-stock alerts: confirmed first, one per mailbox, and never turned on anyone."""

import re
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.utils import timezone

from inventory import alerts
from inventory.alerts import (
    alert_from_unsubscribe_token,
    confirm_alert,
    confirm_token,
    purge_alerts,
    record_arrival,
    send_due_mail,
    subscribe_alert,
    unsubscribe_token,
)
from inventory.exceptions import (
    AddressSuppressed,
    AlertForProductInStock,
    AlertLimitReached,
    InvalidAlertLink,
    InvalidEmail,
    UnknownSku,
)
from inventory.models import Product, StockAlert, SuppressedAddress

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture
def sold_out(product: Product) -> Product:
    Product.objects.filter(pk=product.pk).update(stock=0)
    product.refresh_from_db()
    return product


def confirmed(sku: str, email: str) -> StockAlert:
    """An alert asked for and confirmed, its confirmation email already sent."""
    alert = subscribe_alert(sku=sku, email=email)
    confirm_alert(token=confirm_token(alert))
    alert.refresh_from_db()
    return alert


def back_in_stock() -> list[str]:
    return [m.to[0] for m in mail.outbox if m.subject.endswith(" is back")]


def confirmations() -> list[str]:
    return [m.to[0] for m in mail.outbox if m.subject.startswith("Confirm your alert")]


def path(url: str) -> str:
    return url.removeprefix("http://127.0.0.1:8000")


# --- asking


def test_variants_of_one_mailbox_are_one_alert_with_at_most_one_confirmation_email(sold_out):
    variants = [f"victim+{n}@example.com" for n in range(30)]
    variants += ["Victim@Example.com", "VICTIM+x@EXAMPLE.COM", "victim@example.com"]
    for email in variants:
        subscribe_alert(sku=sold_out.sku, email=email)
    send_due_mail()
    for email in variants:
        subscribe_alert(sku=sold_out.sku, email=email)
    send_due_mail()

    assert StockAlert.objects.get().mailbox == "victim@example.com"
    assert confirmations() == ["victim+0@example.com"]
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_variants_of_one_mailbox_asked_at_once_are_one_alert(factory):
    product = Product.objects.create(
        sku="CP-1", name="Glazed", price=1000, stock=0, factory=factory
    )
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            barrier.wait()
            subscribe_alert(sku=product.sku, email=f"victim+{n}@example.com")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert StockAlert.objects.filter(waiting=True).count() == 1
    send_due_mail()
    assert len(mail.outbox) == 1


def test_bad_input_is_refused(sold_out):
    with pytest.raises(InvalidEmail):
        subscribe_alert(sku=sold_out.sku, email="nope")
    with pytest.raises(UnknownSku):
        subscribe_alert(sku="NOPE-1", email="a@example.com")


def test_a_donut_in_stock_takes_no_alert_and_its_arrivals_send_nothing(product):
    with pytest.raises(AlertForProductInStock) as refused:
        subscribe_alert(sku=product.sku, email="a@example.com")

    assert refused.value.status == 409
    assert record_arrival(sku=product.sku) == 0
    assert send_due_mail() == 0
    assert not StockAlert.objects.exists()
    assert mail.outbox == []


def test_a_mailbox_gets_at_most_its_limit_of_new_alerts_per_window(sold_out, settings):
    settings.ALERT_MAILBOX_LIMIT = 2
    others = [
        Product.objects.create(
            sku=f"CP-7{n}", name=f"도넛 {n}", price=1000, stock=0, factory=sold_out.factory
        )
        for n in range(2)
    ]
    subscribe_alert(sku=sold_out.sku, email="a@example.com")
    subscribe_alert(sku=others[0].sku, email="a+1@example.com")
    # Asking again for an alert it has is no new alert, and not refused.
    subscribe_alert(sku=sold_out.sku, email="A@example.com")

    with pytest.raises(AlertLimitReached) as limited:
        subscribe_alert(sku=others[1].sku, email="a+2@example.com")

    assert limited.value.status == 429
    assert 0 < limited.value.wait <= settings.ALERT_MAILBOX_WINDOW + 1
    assert limited.value.headers() == {"Retry-After": str(limited.value.wait)}
    send_due_mail()
    assert len(confirmations()) == 2


# --- confirming


def test_no_back_in_stock_email_goes_before_the_address_confirms(sold_out):
    alert = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    send_due_mail()
    record_arrival(sku=sold_out.sku)
    send_due_mail()

    assert confirmations() == ["a@example.com"]
    assert back_in_stock() == []

    confirm_alert(token=confirm_token(alert))
    record_arrival(sku=sold_out.sku)
    assert send_due_mail() == 1
    assert back_in_stock() == ["a@example.com"]


def test_the_confirmation_link_shows_a_page_and_only_its_post_confirms(sold_out):
    alert = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    send_due_mail()
    link = next(line for line in mail.outbox[0].body.split() if "/alerts/confirm/" in line)
    client = Client()

    page = client.get(path(link))
    alert.refresh_from_db()
    assert page.status_code == 200
    assert "Confirm" in page.content.decode()
    assert alert.confirmed_at is None

    done = client.post(path(link), follow=True)
    alert.refresh_from_db()
    assert "Confirmed: we will email a@example.com once when 부산도너츠 is back." in (
        done.content.decode()
    )
    assert alert.confirmed_at is not None


def test_an_expired_or_forged_confirmation_link_confirms_nothing(sold_out, settings):
    alert = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    settings.ALERT_CONFIRM_MAX_AGE = -1
    with pytest.raises(InvalidAlertLink, match="expired"):
        confirm_alert(token=confirm_token(alert))
    with pytest.raises(InvalidAlertLink, match="not valid"):
        confirm_alert(token="forged:token")

    assert StockAlert.objects.get().confirmed_at is None


def test_an_unconfirmed_alert_past_its_link_may_be_asked_again(sold_out, settings):
    first = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    StockAlert.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=4))

    again = subscribe_alert(sku=sold_out.sku, email="a@example.com")

    assert again.pk != first.pk
    assert StockAlert.objects.filter(waiting=True).get().pk == again.pk


def test_confirming_once_the_donut_is_back_ends_the_alert(sold_out):
    alert = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    Product.objects.filter(pk=sold_out.pk).update(stock=5)

    assert confirm_alert(token=confirm_token(alert)).waiting is None
    record_arrival(sku=sold_out.sku)
    send_due_mail()
    assert back_in_stock() == []


# --- sending


def test_each_confirmed_address_gets_one_email_and_a_second_arrival_sends_nothing(sold_out):
    confirmed(sold_out.sku, "a@example.com")
    confirmed(sold_out.sku, "b@example.com")

    assert record_arrival(sku=sold_out.sku) == 2
    assert send_due_mail() == 2
    assert record_arrival(sku=sold_out.sku) == 0
    assert send_due_mail() == 0

    assert sorted(back_in_stock()) == ["a@example.com", "b@example.com"]
    assert StockAlert.objects.filter(waiting=True).count() == 0
    assert StockAlert.objects.filter(notified_at__isnull=False).count() == 2


def test_every_email_carries_the_one_click_unsubscribe_headers(sold_out):
    alert = subscribe_alert(sku=sold_out.sku, email="a@example.com")
    send_due_mail()
    confirm_alert(token=confirm_token(alert))
    record_arrival(sku=sold_out.sku)
    send_due_mail()

    assert len(mail.outbox) == 2
    for message in mail.outbox:
        # The token carries its signing time, so it is read back rather than made again.
        link = re.fullmatch(
            r"<http://127\.0\.0\.1:8000/alerts/unsubscribe/([^/]+)/>",
            message.extra_headers["List-Unsubscribe"],
        )
        assert link is not None
        assert alert_from_unsubscribe_token(token=link[1]).pk == alert.pk
        assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_notified_address_may_ask_again(sold_out):
    confirmed(sold_out.sku, "a@example.com")
    record_arrival(sku=sold_out.sku)
    send_due_mail()

    again = confirmed(sold_out.sku, "a@example.com")

    assert StockAlert.objects.filter(waiting=True).get().pk == again.pk
    assert record_arrival(sku=sold_out.sku) == 1


def due_alerts(product: Product, count: int) -> None:
    now = timezone.now()
    StockAlert.objects.bulk_create(
        StockAlert(
            product=product,
            email=f"c{i}@example.com",
            mailbox=f"c{i}@example.com",
            confirmed_at=now,
            due_at=now,
            send_after=now,
        )
        for i in range(count)
    )


def test_a_thousand_addresses_go_in_batches(sold_out, monkeypatch):
    due_alerts(sold_out, 1000)
    claims = []
    claim = alerts._claim_batch
    monkeypatch.setattr(alerts, "_claim_batch", lambda: claims.append(claim()) or claims[-1])

    assert send_due_mail() == 1000

    assert [len(batch) for batch in claims] == [100] * 10 + [0]
    assert len(set(back_in_stock())) == len(mail.outbox) == 1000


def test_a_sender_told_to_stop_leaves_the_rest_due_for_the_next(sold_out):
    due_alerts(sold_out, 5)
    answers = iter([True, True, False])

    assert send_due_mail(keep_going=lambda: next(answers)) == 2

    rest = StockAlert.objects.filter(waiting=True)
    assert rest.count() == 3
    assert not rest.filter(claimed_until__isnull=False).exists()
    assert send_due_mail() == 3
    assert len(set(back_in_stock())) == 5


@pytest.mark.django_db(transaction=True)
def test_two_senders_at_once_send_one_email_per_address(factory):
    product = Product.objects.create(
        sku="CP-1", name="Glazed", price=1000, stock=0, factory=factory
    )
    due_alerts(product, 300)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait()
            send_due_mail()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    recipients = back_in_stock()
    assert len(recipients) == len(set(recipients)) == 300


# --- unsubscribing


def test_an_unsubscribe_get_shows_a_page_and_changes_nothing(sold_out):
    alert = confirmed(sold_out.sku, "f@example.com")

    page = Client().get(f"/alerts/unsubscribe/{unsubscribe_token(alert)}/")

    assert page.status_code == 200
    assert 'method="post"' in page.content.decode()
    assert StockAlert.objects.filter(waiting=True).count() == 1
    assert not SuppressedAddress.objects.exists()


@pytest.mark.parametrize("one_click", [False, True], ids=["button", "one-click"])
def test_an_unsubscribe_post_ends_every_alert_of_the_mailbox_and_suppresses_it(sold_out, one_click):
    alert = confirmed(sold_out.sku, "f+shop@example.com")
    other = Product.objects.create(
        sku="CP-2", name="Cruller", price=1000, stock=0, factory=sold_out.factory
    )
    confirmed(other.sku, "F@example.com")
    url = f"/alerts/unsubscribe/{unsubscribe_token(alert)}/"

    # The mail client's RFC 8058 POST carries no cookie and no CSRF token.
    client = Client(enforce_csrf_checks=True)
    if one_click:
        response = client.post(
            url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        )
    else:
        response = client.post(url)

    assert response.status_code == 200
    assert "will get no more email" in response.content.decode()
    assert SuppressedAddress.objects.get().mailbox == "f@example.com"
    assert StockAlert.objects.filter(unsubscribed_at__isnull=False).count() == 2
    assert record_arrival(sku=sold_out.sku) + record_arrival(sku=other.sku) == 0
    assert send_due_mail() == 0
    assert back_in_stock() == []


def test_a_suppressed_mailbox_cannot_be_signed_up_again_in_any_variant(sold_out):
    alert = subscribe_alert(sku=sold_out.sku, email="v@example.com")
    send_due_mail()
    Client().post(f"/alerts/unsubscribe/{unsubscribe_token(alert)}/")

    for email in ("v@example.com", "V+again@example.com"):
        with pytest.raises(AddressSuppressed):
            subscribe_alert(sku=sold_out.sku, email=email)
    send_due_mail()

    assert confirmations() == ["v@example.com"]


def test_a_forged_unsubscribe_link_changes_nothing(sold_out):
    confirmed(sold_out.sku, "g@example.com")

    response = Client().post("/alerts/unsubscribe/forged:token/")

    assert response.status_code == 404
    assert "not valid" in response.content.decode()
    assert StockAlert.objects.filter(waiting=True).count() == 1
    assert not SuppressedAddress.objects.exists()


# --- purging


def test_purge_deletes_old_ended_and_unconfirmed_alerts_and_keeps_the_rest(sold_out):
    old = timezone.now() - timedelta(days=100)
    kept_waiting = confirmed(sold_out.sku, "waiting@example.com")
    notified = confirmed(sold_out.sku, "notified@example.com")
    StockAlert.objects.filter(pk=notified.pk).update(waiting=None, notified_at=old)
    unconfirmed = subscribe_alert(sku=sold_out.sku, email="unconfirmed@example.com")
    recent_ended = confirmed(sold_out.sku, "recent@example.com")
    StockAlert.objects.filter(pk=recent_ended.pk).update(waiting=None)
    StockAlert.objects.filter(pk__in=[kept_waiting.pk, notified.pk, unconfirmed.pk]).update(
        created_at=old
    )
    SuppressedAddress.objects.create(mailbox="gone@example.com", reason="unsubscribed")

    assert purge_alerts(before=timezone.now() - timedelta(days=90)) == 2

    assert set(StockAlert.objects.values_list("email", flat=True)) == {
        "waiting@example.com",
        "recent@example.com",
    }
    assert SuppressedAddress.objects.count() == 1
