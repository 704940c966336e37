"""The admin: products with their stock audit, orders read-only."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from factory_bridge.models import RestockRequest
from inventory.models import Factory, Product, ReorderDecision, StockAdjustment, SuppressedAddress
from inventory.services import review, set_stock
from shop.services import place_order
from tests.restocks import plant_restock

pytestmark = pytest.mark.usefixtures("no_events")

PRODUCTS = "/admin/inventory/product/"
ORDERS = "/admin/shop/order/"


@pytest.fixture
def sold_out(factory):  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku="CP-502105", name="제주 말차 도넛", price=4500, stock=0, factory=factory
    )


def _listed(response) -> list:  # type: ignore[no-untyped-def]
    return list(response.context["cl"].result_list)


def _change_form_data(client: Client, url: str) -> dict:
    """The POST body the admin change page would submit unchanged, inlines included."""
    page = client.get(url)
    assert page.status_code == 200
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None:
                data[form.add_prefix(name)] = value
    # Inputs the page renders outside the form's fields (the stock value it showed).
    html = page.content.decode()
    data.update(re.findall(r'<input type="hidden" name="(\w+_seen)" value="(\d*)">', html))
    return data


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


@pytest.mark.parametrize(
    ("query", "expected"), [("502105", ["CP-502105"]), ("부산", ["CP-502101"])]
)
def test_product_changelist_search(admin_client, product, sold_out, query, expected):
    response = admin_client.get(PRODUCTS, {"q": query})

    assert response.status_code == 200
    assert [p.sku for p in _listed(response)] == expected


def _failed_restock(product: Product) -> RestockRequest:
    return plant_restock(
        product,
        RestockRequest.Status.FAILED,
        next_attempt_at=None,
        last_error="factory refused: 500",
    )


def test_a_sold_out_product_whose_restock_failed_is_flagged_as_needing_staff(
    admin_client, product, sold_out
):
    _failed_restock(sold_out)
    _failed_restock(product)  # still in stock: nothing to do yet

    page = admin_client.get(PRODUCTS).content.decode()
    flagged = admin_client.get(PRODUCTS, {"needs_staff": "yes"})

    assert page.count('class="needs-staff"') == 1
    assert "Failed: needs staff" in page
    assert _listed(flagged) == [sold_out]


def test_a_product_counted_back_in_stock_no_longer_needs_staff(admin_client, sold_out):
    _failed_restock(sold_out)
    set_stock(sku=sold_out.sku, quantity=5, note="count")

    assert _listed(admin_client.get(PRODUCTS, {"needs_staff": "yes"})) == []


def test_the_product_page_shows_its_failed_restock_and_why(admin_client, sold_out):
    _failed_restock(sold_out)

    page = admin_client.get(f"{PRODUCTS}{sold_out.pk}/change/").content.decode()

    assert "Restock requests in progress or failed" in page
    assert "Failed: needs staff" in page
    assert "factory refused: 500" in page


def test_product_change_page_shows_stock_adjustments(admin_client, product):
    set_stock(sku="CP-502101", quantity=9, note="Monday count")

    response = admin_client.get(f"{PRODUCTS}{product.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Stock adjustments (audit)" in page
    assert "Monday count" in page


def test_product_change_form_saves(admin_client, product):
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    data["description"] = "Glazed, from Busan."

    response = admin_client.post(url, data)

    assert response.status_code == 302
    product.refresh_from_db()
    assert product.description == "Glazed, from Busan."


def test_editing_a_product_does_not_undo_concurrent_orders(admin_client, product):
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    place_order(sku="CP-502101", quantity=1)
    data["description"] = "Glazed, from Busan."

    admin_client.post(url, data)

    product.refresh_from_db()
    assert product.description == "Glazed, from Busan."
    assert product.stock == 2


def test_changing_stock_in_the_admin_is_audited_and_ends_the_depletion(admin_client, product):
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    data["stock"] = 8

    admin_client.post(url, data)

    product.refresh_from_db()
    assert product.stock == 8
    assert product.depleted_at is None
    adjustment = StockAdjustment.objects.get()
    assert (adjustment.old_quantity, adjustment.new_quantity) == (0, 8)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stock", -1, "Stock cannot be negative."),
        ("restock_quantity", 0, "Restock quantity must be at least 1."),
    ],
)
def test_product_change_form_says_what_is_wrong_in_words(
    admin_client, product, field, value, message
):
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    data[field] = value

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert "Constraint" not in response.content.decode()
    product.refresh_from_db()
    assert (product.stock, product.restock_quantity) == (3, 10)
    assert not StockAdjustment.objects.exists()


def test_product_add_form_refuses_a_negative_stock_in_words(admin_client, factory):
    response = admin_client.post(
        f"{PRODUCTS}add/",
        {
            "sku": "CP-502109",
            "name": "Test donut",
            "price": 1000,
            "factory": factory.pk,
            "stock": -5,
            "restock_quantity": 10,
            "replenishment_mode": "adaptive",
            "min_order_quantity": 10,
            "max_order_quantity": 500,
            "adjustments-TOTAL_FORMS": 0,
            "adjustments-INITIAL_FORMS": 0,
            "restockrequest_set-TOTAL_FORMS": 0,
            "restockrequest_set-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"stock": ["Stock cannot be negative."]}
    assert not Product.objects.filter(sku="CP-502109").exists()


def test_product_changelist_refuses_a_negative_stock_in_words(admin_client, product):
    response = admin_client.post(
        PRODUCTS,
        {
            "form-TOTAL_FORMS": 1,
            "form-INITIAL_FORMS": 1,
            "form-0-id": product.pk,
            "form-0-stock": -2,
            "form-0-stock_seen": 3,
            "_save": "Save",
        },
    )

    assert response.status_code == 200
    assert response.context["cl"].formset.errors == [{"stock": ["Stock cannot be negative."]}]
    assert "Constraint" not in response.content.decode()
    product.refresh_from_db()
    assert product.stock == 3


def test_order_changelist_loads(admin_client, db):
    response = admin_client.get(ORDERS)

    assert response.status_code == 200


def test_order_changelist_lists_orders(admin_client, product):
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


def test_product_page_shows_the_replenishment_numbers_and_last_decisions(admin_client, product):
    Product.objects.filter(pk=product.pk).update(demand_rate=2.5, reorder_point=45)
    place_order(sku="CP-502101", quantity=3)  # empty: one decision

    page = admin_client.get(f"{PRODUCTS}{product.pk}/change/").content.decode()

    assert "2.50/s" in page
    assert "Last reorder decisions" in page
    assert "on hand and on order &lt; reorder point 45" in page
    listing = admin_client.get(PRODUCTS).content.decode()
    assert "45" in listing
    assert "40.0 s" in listing  # the factory's lead time, as configured until measured


def test_replenishment_bounds_are_edited_in_admin(admin_client, product):
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    data.update(
        replenishment_mode="at_zero",
        min_order_quantity="5",
        max_order_quantity="50",
        reorder_ceiling="400",
        purchase_limit="2",
    )

    response = admin_client.post(url, data)

    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.replenishment_mode, product.min_order_quantity) == ("at_zero", 5)
    assert (product.max_order_quantity, product.purchase_limit) == (50, 2)
    assert product.reorder_ceiling == 400
    assert '<td class="field-ceiling">400</td>' in admin_client.get(PRODUCTS).content.decode()


def test_staff_see_the_suppressed_mailboxes_and_may_lift_one(admin_client):
    gone = SuppressedAddress.objects.create(
        mailbox="gone@example.com", reason="bounced", detail="550 5.1.1 No such user"
    )
    url = "/admin/inventory/suppressedaddress/"

    listed = admin_client.get(url)
    assert listed.status_code == 200
    assert "gone@example.com" in listed.content.decode()
    assert "550 5.1.1 No such user" in listed.content.decode()
    assert admin_client.get(f"{url}add/").status_code == 403

    admin_client.post(f"{url}{gone.pk}/delete/", {"post": "yes"})
    assert not SuppressedAddress.objects.exists()


# What staff read: rates and lead times rounded, never 0.6240858063379249.
RAW_RATE, RAW_LEAD_TIME = 0.6240858063379249, 12.345678901234


def test_floats_read_rounded_on_products_decisions_and_factories(admin_client, product):
    Product.objects.filter(pk=product.pk).update(demand_rate=RAW_RATE, reorder_point=45)
    Factory.objects.filter(pk=product.factory_id).update(lead_time=RAW_LEAD_TIME)
    set_stock(sku="CP-502101", quantity=0, note="count")
    decision = review(product_id=product.pk)  # empty: one decision, as the loop decides it
    ReorderDecision.objects.filter(pk=decision.pk).update(
        demand_rate=RAW_RATE, lead_time=RAW_LEAD_TIME
    )

    pages = [
        PRODUCTS,
        f"{PRODUCTS}{product.pk}/change/",
        "/admin/inventory/reorderdecision/",
        f"/admin/inventory/reorderdecision/{decision.pk}/change/",
        "/admin/inventory/factory/",
        f"/admin/inventory/factory/{product.factory_id}/change/",
    ]
    for url in pages:
        page = admin_client.get(url).content.decode()

        assert "0.6240" not in page and "12.345" not in page, url
        assert "0.62/s" in page or "12.3" in page, url
    decisions = admin_client.get("/admin/inventory/reorderdecision/").content.decode()
    assert "0.62/s" in decisions and "12.3 s" in decisions


def test_saving_a_factory_keeps_its_measured_lead_time(admin_client, product):
    Factory.objects.filter(pk=product.factory_id).update(lead_time=RAW_LEAD_TIME)
    url = f"/admin/inventory/factory/{product.factory_id}/change/"
    data = _change_form_data(admin_client, url)
    # As a browser posts it: the lead time shown, and the initial value the page keeps hidden
    # (the field's default is computed).
    page = admin_client.get(url).content.decode()
    data.update(
        re.findall(r'<input type="hidden" name="(initial-lead_time)" value="([\d.]+)"', page)
    )
    assert (data["lead_time"], data["initial-lead_time"]) == (12.3, "12.3")
    data["capacity"] = "50"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    factory = Factory.objects.get(pk=product.factory_id)
    assert (factory.capacity, factory.lead_time) == (50, RAW_LEAD_TIME)


def test_staff_set_a_factory_lead_time(admin_client, product):
    url = f"/admin/inventory/factory/{product.factory_id}/change/"
    data = _change_form_data(admin_client, url)
    data["lead_time"] = "25.5"

    assert admin_client.post(url, data).status_code == 302
    assert Factory.objects.get(pk=product.factory_id).lead_time == 25.5


def test_the_ceiling_shown_is_the_factorys_until_the_product_sets_one(admin_client, product):
    listing = admin_client.get(PRODUCTS).content.decode()

    assert '<td class="field-ceiling">2000 (factory)</td>' in listing


def test_a_factorys_ceiling_is_edited_and_its_measured_lead_times_shown(admin_client, factory):
    Factory.objects.filter(pk=factory.pk).update(lead_time_samples=[10.25, 11.0])
    url = f"/admin/inventory/factory/{factory.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "10.2 s, 11.0 s" in page
    data = _change_form_data(admin_client, url)
    data.update(reorder_ceiling="800")

    assert admin_client.post(url, data).status_code == 302

    factory.refresh_from_db()
    assert factory.reorder_ceiling == 800


def test_a_stock_typed_in_admin_says_no_reorder_is_decided_yet(admin_client, product, settings):
    settings.STOCK_COUNT_SETTLE = 30
    url = f"{PRODUCTS}{product.pk}/change/"
    data = _change_form_data(admin_client, url)
    data.update(stock="0")

    page = admin_client.post(url, data, follow=True).content.decode()

    assert "CP-502101 counted at 0. No reorder decided now: if the stock still calls" in page
    assert not product.decisions.exists()
