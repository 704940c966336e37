"""Asking for a back-in-stock email: the storefront form (no JavaScript) and the Sales API."""

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from inventory.alerts import send_due_mail
from inventory.models import Product, StockAlert, SuppressedAddress

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture
def sold_out(product: Product) -> Product:
    Product.objects.filter(pk=product.pk).update(stock=0)
    return product


def test_a_sold_out_card_offers_the_form_and_posting_it_asks_for_confirmation(sold_out):
    client = Client()
    page = client.get("/").content.decode()
    assert "Tell me when it's back" in page
    assert 'action="/alerts/"' in page

    response = client.post("/alerts/", {"sku": sold_out.sku, "email": "a@example.com"}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert (
        "Almost done: follow the link we email to a@example.com, and we will write once when "
        "부산도너츠 is back." in response.content.decode()
    )
    alert = StockAlert.objects.get()
    assert (alert.email, alert.confirmed_at) == ("a@example.com", None)


def test_a_card_in_stock_has_no_alert_form_and_posting_one_anyway_is_refused(product):
    client = Client()
    assert "Tell me when it's back" not in client.get("/").content.decode()

    response = client.post("/alerts/", {"sku": product.sku, "email": "a@example.com"}, follow=True)

    assert "부산도너츠 is in stock: order it now" in response.content.decode()
    assert not StockAlert.objects.exists()


def test_the_form_refuses_a_bad_address_and_an_unknown_sku(sold_out):
    client = Client()
    bad = client.post("/alerts/", {"sku": sold_out.sku, "email": "nope"}, follow=True)
    unknown = client.post("/alerts/", {"sku": "NOPE-1", "email": "a@example.com"}, follow=True)

    assert "We could not take your alert (Email: Enter a valid email address.)" in (
        bad.content.decode()
    )
    assert "No product with SKU" in unknown.content.decode()
    assert not StockAlert.objects.exists()


def test_the_form_without_a_csrf_token_is_refused(sold_out):
    response = Client(enforce_csrf_checks=True).post(
        "/alerts/", {"sku": sold_out.sku, "email": "a@example.com"}
    )

    assert response.status_code == 403
    assert not StockAlert.objects.exists()


def test_the_api_takes_variants_of_one_mailbox_once_and_answers_each_alike(sold_out):
    url = f"/api/products/{sold_out.sku}/alerts/"
    answers = [
        APIClient().post(url, {"email": email}, format="json")
        for email in ("a@example.com", "A+news@Example.com", "a+1@example.com")
    ]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[1].json() == {
        "sku": sold_out.sku,
        "email": "A+news@Example.com",
        "status": "pending",
    }
    assert StockAlert.objects.count() == 1
    send_due_mail()
    assert [m.to for m in mail.outbox] == [["a@example.com"]]


def test_the_api_refuses_bad_input(sold_out):
    bad = APIClient().post(
        f"/api/products/{sold_out.sku}/alerts/", {"email": "nope"}, format="json"
    )
    unknown = APIClient().post("/api/products/NOPE-1/alerts/", {"email": "a@x.com"}, format="json")

    assert bad.status_code == 400
    assert bad.json()["errors"] == {"email": ["Enter a valid email address."]}
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_sku"


def test_the_api_refuses_a_donut_in_stock_and_a_suppressed_mailbox(product):
    url = f"/api/products/{product.sku}/alerts/"
    in_stock = APIClient().post(url, {"email": "a@example.com"}, format="json")
    Product.objects.filter(pk=product.pk).update(stock=0)
    SuppressedAddress.objects.create(mailbox="gone@example.com", reason="unsubscribed")
    suppressed = APIClient().post(url, {"email": "Gone+x@example.com"}, format="json")

    assert in_stock.status_code == suppressed.status_code == 409
    assert in_stock.json()["code"] == "in_stock"
    assert in_stock.json()["sku"] == product.sku
    assert suppressed.json()["code"] == "suppressed"
    assert not StockAlert.objects.exists()


# --- rate limits


def test_one_client_address_may_ask_for_alerts_only_so_often(sold_out, settings):
    settings.ALERT_RATE_LIMIT = "3/h"
    url = f"/api/products/{sold_out.sku}/alerts/"
    # Each request a new client session: the limit holds to the address.
    statuses = [
        APIClient().post(url, {"email": f"v{n}@example.com"}, format="json").status_code
        for n in range(4)
    ]
    throttled = APIClient().post(url, {"email": "w@example.com"}, format="json")
    storefront = Client().post(
        "/alerts/", {"sku": sold_out.sku, "email": "x@example.com"}, follow=True
    )

    assert statuses == [201, 201, 201, 429]
    assert throttled.json()["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0
    assert "Too many alert requests; try again in" in storefront.content.decode()
    assert StockAlert.objects.count() == 3


def test_one_mailbox_gets_only_so_many_new_alerts_from_any_address(sold_out, settings):
    settings.ALERT_MAILBOX_LIMIT = 2
    others = [
        Product.objects.create(
            sku=f"CP-7{n}", name=f"도넛 {n}", price=1000, stock=0, factory=sold_out.factory
        )
        for n in range(3)
    ]
    answers = [
        APIClient(REMOTE_ADDR=f"10.0.0.{n}").post(
            f"/api/products/{p.sku}/alerts/", {"email": f"victim+{n}@example.com"}, format="json"
        )
        for n, p in enumerate(others)
    ]
    storefront = Client().post(
        "/alerts/", {"sku": sold_out.sku, "email": "victim@example.com"}, follow=True
    )

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["code"] == "throttled"
    assert int(answers[2]["Retry-After"]) > 0
    assert "as many confirmation emails from us" in storefront.content.decode()
    send_due_mail()
    assert len(mail.outbox) == 2
