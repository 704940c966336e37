"""The storefront: a catalog page and an order form that works without JavaScript."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from factory_bridge.models import RestockRequest
from inventory.models import Product
from shop.models import Order
from tests.restocks import plant_restock

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture
def sold_out(factory):  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku="CP-502105", name="제주 말차 도넛", price=4500, stock=0, factory=factory
    )


def test_storefront_lists_products(client, product, sold_out):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "부산도너츠" in html
    assert "제주 말차 도넛" in html
    assert "₩19,900" in html
    assert "₩4,500" in html
    assert "3 in stock" in html
    assert "Sold out" in html
    assert list(response.context["products"]) == [product, sold_out]


def test_storefront_has_an_order_form_only_for_products_in_stock(client, product, sold_out):
    html = client.get("/").content.decode()

    forms = [form.split("</form>", 1)[0] for form in html.split("<form ")[1:]]
    order_forms = [form for form in forms if 'action="/order/"' in form.split(">", 1)[0]]
    [order_form, preorder_form] = order_forms
    assert 'class="order"' in order_form
    assert 'value="CP-502101"' in order_form
    assert 'value="CP-502105"' not in order_form
    assert 'name="csrfmiddlewaretoken"' in order_form
    # The sold-out donut offers a pre-order from the next batch and the back-in-stock form.
    assert 'class="preorder"' in preorder_form
    assert 'value="CP-502105"' in preorder_form
    assert 'name="backorder"' in preorder_form
    assert "Take one from the next batch — ready in about 55 s" in preorder_form
    [alert_form] = [form for form in forms if 'action="/alerts/"' in form.split(">", 1)[0]]
    assert 'value="CP-502105"' in alert_form


def _restock(product: Product, status: str, *, accepted_ago: timedelta = timedelta(0)) -> None:
    accepted = status == RestockRequest.Status.REQUESTED
    plant_restock(product, status, requested_at=timezone.now() - accepted_ago if accepted else None)


def test_storefront_says_more_are_being_made_once_the_factory_accepted(client, sold_out):
    _restock(sold_out, RestockRequest.Status.REQUESTED)

    html = client.get("/").content.decode()

    assert "10 more are being made — about 40 s</p>" in html


def test_storefront_counts_down_from_the_factory_lead_time(client, sold_out):
    _restock(sold_out, RestockRequest.Status.REQUESTED, accepted_ago=timedelta(seconds=15))

    html = client.get("/").content.decode()

    assert "10 more are being made — about 25 s</p>" in html


def test_storefront_says_a_late_restock_is_due_any_moment(client, sold_out):
    _restock(sold_out, RestockRequest.Status.REQUESTED, accepted_ago=timedelta(minutes=5))

    html = client.get("/").content.decode()

    assert "10 more are being made — due any moment</p>" in html


def test_storefront_loads_its_live_updates_from_this_server(client, product):
    html = client.get("/").content.decode()

    assert '<script src="/static/shop/live.js" defer></script>' in html
    assert 'data-live="/api/products/"' in html


@pytest.mark.parametrize("status", [RestockRequest.Status.PENDING, RestockRequest.Status.FAILED])
def test_storefront_promises_nothing_the_factory_has_not_accepted(client, sold_out, status):
    _restock(sold_out, status)

    html = client.get("/").content.decode()

    assert "Sold out" in html
    assert "being made" not in html
    assert "on the way" not in html


def test_storefront_empty(client, db):
    response = client.get("/")

    assert response.status_code == 200
    assert "No donuts on the shelf yet." in response.content.decode()


def test_order_without_csrf_token_is_forbidden(product):
    client = Client(enforce_csrf_checks=True)

    response = client.post("/order/", {"sku": "CP-502101", "quantity": 1})

    assert response.status_code == 403
    assert not Order.objects.exists()


def test_order_with_csrf_token_from_the_page(product):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/")
    token = page.context["csrf_token"]

    response = client.post(
        "/order/", {"sku": "CP-502101", "quantity": 1, "csrfmiddlewaretoken": token}
    )

    assert response.status_code == 302
    assert Order.objects.get().status == Order.Status.COMPLETED


def test_order_redirects_to_its_receipt(client, product):
    response = client.post("/order/", {"sku": "CP-502101", "quantity": 2})

    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.reference}/"
    assert order.status == Order.Status.COMPLETED
    assert order.channel == Order.Channel.WEB
    assert "1 in stock" in client.get("/").content.decode()


def test_receipt_shows_the_order_and_survives_a_reload(client, product):
    client.post("/order/", {"sku": "CP-502101", "quantity": 2})
    order = Order.objects.get()

    first = client.get(f"/orders/{order.reference}/")
    product.price = 25000
    product.save()
    again = client.get(f"/orders/{order.reference}/")

    assert first.status_code == again.status_code == 200
    html = again.content.decode()
    assert f'<dd class="number">{order.reference}</dd>' in html
    # The counting id would tell anyone how many orders the shop takes.
    assert f"#{order.pk}" not in html
    assert '<dd class="donut">부산도너츠</dd>' in html
    assert '<dd class="quantity">2</dd>' in html
    assert '<dd class="unit-price">₩19,900</dd>' in html
    assert '<dd class="total">₩39,800</dd>' in html
    local = timezone.localtime(order.created_at)
    assert local.strftime("%Y-%m-%d %H:%M:%S") in html
    assert first.content == again.content


def test_receipt_of_an_unknown_reference_is_not_found(client, product):
    client.post("/order/", {"sku": "CP-502101", "quantity": 1})
    order = Order.objects.get()

    for guess in ("nope", str(order.pk), order.reference[:-1], order.reference + "0"):
        assert client.get(f"/orders/{guess}/").status_code == 404, guess


def test_order_references_are_unguessable(client, product):
    for _ in range(3):
        client.post("/order/", {"sku": "CP-502101", "quantity": 1})

    references = list(Order.objects.values_list("reference", flat=True))
    assert len(set(references)) == 3
    assert all(len(reference) == 32 for reference in references)


def test_order_larger_than_stock_is_refused(client, product):
    response = client.post("/order/", {"sku": "CP-502101", "quantity": 5}, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [("/", 302)]
    page = response.content.decode()
    assert "Sorry, only 3 부산도너츠 left; you asked for 5.</li>" in page
    assert "msg-error" in page
    product.refresh_from_db()
    assert product.stock == 3
    assert not Order.objects.exists()


@pytest.mark.parametrize("quantity", ["0", "-1", "abc", "1.5", "", "101"])
def test_invalid_quantity_shows_an_error(client, product, quantity):
    response = client.post("/order/", {"sku": "CP-502101", "quantity": quantity}, follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Your order could not be placed. Quantity: " in page
    assert ".)" not in page
    assert "msg-error" in page
    assert not Order.objects.exists()
    product.refresh_from_db()
    assert product.stock == 3


def test_missing_sku_shows_an_error(client, product):
    response = client.post("/order/", {"quantity": 1}, follow=True)

    assert response.status_code == 200
    assert "Your order could not be placed. Donut: This field is required.</li>" in (
        response.content.decode()
    )
    assert not Order.objects.exists()


def test_order_on_a_sold_out_donut_says_so(client, sold_out):
    response = client.post("/order/", {"sku": "CP-502105", "quantity": 1}, follow=True)

    assert "Sorry, 제주 말차 도넛 is sold out.</li>" in response.content.decode()


def test_unknown_sku_shows_an_error(client, product):
    response = client.post("/order/", {"sku": "NOPE-1", "quantity": 1}, follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "No product with SKU" in page
    assert "NOPE-1" in page
    assert not Order.objects.exists()


def test_get_on_order_is_not_allowed(client, db):
    assert client.get("/order/").status_code == 405


def test_the_sold_out_card_takes_a_pre_order_without_javascript(client, sold_out):
    response = client.post(
        "/order/", {"sku": "CP-502105", "quantity": 1, "backorder": "on", "email": ""}
    )

    order = Order.objects.get()
    assert order.status == Order.Status.BACKORDERED
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.reference}/"
    page = client.get(response["Location"]).content.decode()
    assert "Your pre-order is confirmed" in page
    assert "Ready by" in page
