"""Asking for a back-in-stock email: the storefront form (no JavaScript) and the Sales API."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from inventory.models import Product, StockAlert

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture
def sold_out(product: Product) -> Product:
    Product.objects.filter(pk=product.pk).update(stock=0)
    return product


def test_a_sold_out_card_offers_the_form_and_posting_it_subscribes(sold_out):
    client = Client()
    page = client.get("/").content.decode()
    assert "Tell me when it's back" in page
    assert 'action="/alerts/"' in page

    response = client.post("/alerts/", {"sku": sold_out.sku, "email": "a@example.com"}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert "We will email a@example.com once when 부산도너츠 is back." in response.content.decode()
    assert StockAlert.objects.get().email == "a@example.com"


def test_a_card_in_stock_has_no_alert_form(product):
    assert "Tell me when it's back" not in Client().get("/").content.decode()


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


def test_the_api_subscribes_once_and_answers_the_same_again(sold_out):
    url = f"/api/products/{sold_out.sku}/alerts/"
    first = APIClient().post(url, {"email": "a@example.com"}, format="json")
    again = APIClient().post(url, {"email": "a@example.com"}, format="json")

    assert first.status_code == again.status_code == 201
    assert (
        first.json()
        == again.json()
        == {
            "sku": sold_out.sku,
            "email": "a@example.com",
            "status": "waiting",
        }
    )
    assert StockAlert.objects.count() == 1


def test_the_api_refuses_bad_input(sold_out):
    bad = APIClient().post(
        f"/api/products/{sold_out.sku}/alerts/", {"email": "nope"}, format="json"
    )
    unknown = APIClient().post("/api/products/NOPE-1/alerts/", {"email": "a@x.com"}, format="json")

    assert bad.status_code == 400
    assert bad.json()["errors"] == {"email": ["Enter a valid email address."]}
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_sku"
