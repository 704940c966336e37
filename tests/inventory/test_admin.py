"""The admin: products with their stock audit, orders read-only."""

import pytest

from inventory.models import Product
from inventory.services import set_stock
from shop.services import place_order

pytestmark = pytest.mark.usefixtures("no_events")

PRODUCTS = "/admin/inventory/product/"
ORDERS = "/admin/shop/order/"


@pytest.fixture
def sold_out(factory):  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku="CP-502105", name="제주 말차 도넛", price=4500, stock=0, factory=factory
    )


def _listed(response) -> list[Product]:  # type: ignore[no-untyped-def]
    return list(response.context["cl"].result_list)


def test_product_changelist(admin_client, product, sold_out):
    response = admin_client.get(PRODUCTS)

    assert response.status_code == 200
    assert _listed(response) == [product, sold_out]
    assert "부산도너츠" in response.content.decode()


@pytest.mark.parametrize(("value", "expected"), [("yes", ["CP-502105"]), ("no", ["CP-502101"])])
def test_product_changelist_sold_out_filter(admin_client, product, sold_out, value, expected):
    response = admin_client.get(PRODUCTS, {"sold_out": value})

    assert response.status_code == 200
    assert [p.sku for p in _listed(response)] == expected


@pytest.mark.parametrize(("query", "expected"), [("502105", ["CP-502105"]), ("부산", ["CP-502101"])])
def test_product_changelist_search(admin_client, product, sold_out, query, expected):
    response = admin_client.get(PRODUCTS, {"q": query})

    assert response.status_code == 200
    assert [p.sku for p in _listed(response)] == expected


def test_product_change_page_shows_stock_adjustments(admin_client, product):
    set_stock(sku="CP-502101", quantity=9, note="Monday count")

    response = admin_client.get(f"{PRODUCTS}{product.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Stock adjustments (audit)" in page
    assert "Monday count" in page


def test_order_changelist(admin_client, product):
    place_order(sku="CP-502101", quantity=1)

    response = admin_client.get(ORDERS)

    assert response.status_code == 200
    assert len(_listed(response)) == 1


def test_order_add_is_forbidden(admin_client, db):
    assert admin_client.get(f"{ORDERS}add/").status_code == 403


def test_admin_needs_a_login(client, product):
    response = client.get(PRODUCTS)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
