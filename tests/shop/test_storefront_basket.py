"""The storefront's basket: kept in the session (shop.baskets), filled, changed and ordered
with plain forms (shop.views)."""

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from inventory.exceptions import UnknownSku
from inventory.models import Product
from shop.baskets import (
    SESSION_KEY,
    SHORT_KEY,
    basket_add,
    basket_clear,
    basket_get,
    basket_note_short,
    basket_pop_short,
    basket_remove,
    basket_set,
    basket_units,
)
from shop.exceptions import InvalidOrder, ShortLine
from shop.models import Basket, Order

pytestmark = pytest.mark.usefixtures("no_events")


@pytest.fixture
def session(db) -> SessionStore:  # type: ignore[no-untyped-def]
    return SessionStore()


def _lines(session: SessionStore) -> list[tuple[str, int]]:
    return [(line.product.sku, line.quantity) for line in basket_get(session).lines]


# --- The session basket's rules


def test_a_basket_keeps_its_lines_in_the_order_first_added_and_sums_a_donut_added_again(
    session, donuts
):
    basket_add(session, sku="CP-2", quantity=1)
    basket_add(session, sku="CP-1", quantity=2)
    line = basket_add(session, sku="CP-2", quantity=3)

    assert (line.product.sku, line.quantity, line.price) == ("CP-2", 4, 8000)
    basket = basket_get(session)
    assert _lines(session) == [("CP-2", 4), ("CP-1", 2)]
    assert (basket.total, basket.units) == (10_000, 6)
    assert basket.items() == [{"sku": "CP-2", "quantity": 4}, {"sku": "CP-1", "quantity": 2}]
    assert basket_units(session) == 6


def test_a_sku_matches_whatever_its_case_and_is_kept_as_the_catalog_spells_it(session, donuts):
    basket_add(session, sku="  cp-1 ", quantity=1)
    basket_add(session, sku="Cp-1", quantity=1)

    assert session[SESSION_KEY] == {"CP-1": 2}


def test_an_unknown_donut_is_not_added(session, donuts):
    with pytest.raises(UnknownSku):
        basket_add(session, sku="CP-404", quantity=1)

    assert SESSION_KEY not in session


@pytest.mark.parametrize("quantity", [0, -1, 101])
def test_a_quantity_out_of_bounds_is_not_added(session, donuts, quantity):
    with pytest.raises(InvalidOrder) as refused:
        basket_add(session, sku="CP-1", quantity=quantity)

    assert list(refused.value.errors) == ["quantity"]
    assert SESSION_KEY not in session


def test_a_line_holds_order_max_quantity_at_most(session, donuts, settings):
    settings.ORDER_MAX_QUANTITY = 5
    basket_add(session, sku="CP-1", quantity=4)

    with pytest.raises(InvalidOrder) as refused:
        basket_add(session, sku="CP-1", quantity=2)

    assert refused.value.errors == {
        "quantity": ["A basket holds 5 of one donut at most; yours has 4 Donut 1."]
    }
    assert _lines(session) == [("CP-1", 4)]
    basket_add(session, sku="CP-1", quantity=1)
    assert _lines(session) == [("CP-1", 5)]


def test_a_basket_holds_order_max_lines_kinds_at_most(session, donuts, settings):
    settings.ORDER_MAX_LINES = 2
    basket_add(session, sku="CP-1", quantity=1)
    basket_add(session, sku="CP-2", quantity=1)

    with pytest.raises(InvalidOrder) as refused:
        basket_add(session, sku="CP-3", quantity=1)

    assert refused.value.errors == {"items": ["A basket holds 2 kinds of donut at most."]}
    basket_add(session, sku="CP-2", quantity=1)  # a kind it has already is no new line
    assert _lines(session) == [("CP-1", 1), ("CP-2", 2)]


def test_set_changes_quantities_zero_takes_a_line_out_and_adds_no_line(session, donuts):
    basket_add(session, sku="CP-1", quantity=1)
    basket_add(session, sku="CP-2", quantity=1)

    basket_set(session, quantities={"cp-1": 7, "CP-2": 0, "CP-3": 5})

    assert _lines(session) == [("CP-1", 7)]


@pytest.mark.parametrize("quantity", [-1, 101])
def test_set_out_of_bounds_changes_nothing(session, donuts, quantity):
    basket_add(session, sku="CP-1", quantity=1)
    basket_add(session, sku="CP-2", quantity=1)

    with pytest.raises(InvalidOrder):
        basket_set(session, quantities={"CP-1": 3, "CP-2": quantity})

    assert _lines(session) == [("CP-1", 1), ("CP-2", 1)]


def test_remove_and_clear(session, donuts):
    basket_add(session, sku="CP-1", quantity=1)
    basket_add(session, sku="CP-2", quantity=1)
    basket_note_short(session, lines=[ShortLine("CP-2", "Donut 2", 1, 0)])

    basket_remove(session, sku="CP-2")
    basket_remove(session, sku="CP-3")
    assert _lines(session) == [("CP-1", 1)]
    basket_remove(session, sku="CP-1")
    assert SESSION_KEY not in session

    basket_add(session, sku="CP-1", quantity=1)
    basket_clear(session)
    assert basket_get(session).lines == ()
    assert SESSION_KEY not in session and SHORT_KEY not in session


@pytest.mark.parametrize(
    "stored",
    [None, "CP-1", ["CP-1", 1], {"CP-1": "2"}, {"CP-1": 0}, {"CP-1": -1}, {"CP-1": 101}],
)
def test_a_session_basket_that_breaks_the_rules_holds_nothing(session, donuts, stored):
    session[SESSION_KEY] = stored

    assert basket_get(session).lines == ()
    assert basket_units(session) == 0


def test_a_session_basket_keeps_only_its_entries_within_the_rules(session, donuts, settings):
    settings.ORDER_MAX_LINES = 3
    session[SESSION_KEY] = {
        "CP-404": 1,  # no such donut: left out when read, though the session keeps it
        "CP-1": 2,
        "cp-1": 5,  # the same donut again
        "CP-2": True,
        "CP-3": 3,
        "CP-2 ": 1,  # past ORDER_MAX_LINES (CP-404, CP-1, CP-3)
    }

    assert _lines(session) == [("CP-1", 2), ("CP-3", 3)]
    assert basket_get(session).total == 2000 + 9000


def test_short_lines_are_shown_once_and_tampered_ones_never(session):
    basket_note_short(
        session, lines=[ShortLine("CP-2", "Donut 2", 3, 1), ShortLine("CP-3", "Donut 3", 1, 0)]
    )

    assert basket_pop_short(session) == {
        "cp-2": ShortLine("CP-2", "Donut 2", 3, 1),
        "cp-3": ShortLine("CP-3", "Donut 3", 1, 0),
    }
    assert basket_pop_short(session) == {}
    session[SHORT_KEY] = [["CP-2", "Donut 2", "3", 1], "CP-3", ["CP-1", "Donut 1", 2, 0]]
    assert basket_pop_short(session) == {"cp-1": ShortLine("CP-1", "Donut 1", 2, 0)}


# --- The pages


def _add(client: Client, sku: str, quantity: int):  # type: ignore[no-untyped-def]
    return client.post("/basket/add/", {"sku": sku, "quantity": quantity}, follow=True)


def _page(client: Client) -> str:
    return client.get("/basket/").content.decode()


def _errors(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(m) for m in response.context["messages"] if m.level_tag == "error"]


def test_each_card_in_stock_adds_its_donut_to_the_basket_with_the_order_form(client, donuts):
    Product.objects.filter(sku="CP-3").update(stock=0)

    html = client.get("/").content.decode()

    forms = [form.split("</form>", 1)[0] for form in html.split("<form ")[1:]]
    adding = [form for form in forms if 'formaction="/basket/add/"' in form]
    assert len(adding) == 2
    assert all('action="/order/"' in form and 'name="quantity"' in form for form in adding)
    assert 'href="/basket/"' in html


def test_adding_shows_in_the_header_and_on_the_basket_page(client, donuts):
    response = _add(client, "CP-1", 2)

    assert response.redirect_chain == [("/", 302)]
    assert "Your basket has 2 × Donut 1." in response.content.decode()
    assert '<span class="count">2</span>' in response.content.decode()
    _add(client, "CP-3", 1)

    page = _page(client)
    assert page.index('id="line-CP-1"') < page.index('id="line-CP-3"')
    assert "₩1,000 each" in page and "₩3,000 each" in page
    assert "₩2,000</span>" in page  # 2 × Donut 1
    assert '<span class="total">₩5,000</span>' in page
    assert 'name="quantity-CP-1" value="2"' in page


def test_adding_an_unknown_donut_or_too_many_says_why(client, donuts, settings):
    settings.ORDER_MAX_QUANTITY = 5

    unknown = _add(client, "CP-404", 1)
    too_many = _add(client, "CP-1", 6)
    not_a_number = _add(client, "CP-1", "two")  # type: ignore[arg-type]

    assert _errors(unknown) == ["No product with SKU 'CP-404'."]
    assert _errors(too_many) == [
        "Your order could not be placed. Quantity: Ensure this value is less than or equal to 5."
    ]
    assert _errors(not_a_number) == [
        "We could not add that to your basket (Quantity: Enter a whole number.)."
    ]
    assert SESSION_KEY not in client.session


def test_the_empty_basket_page_says_so(client, db):
    page = _page(client)

    assert "Your basket is empty" in page
    assert "Order the basket" not in page


def test_update_sets_quantities_and_zero_takes_a_line_out(client, donuts):
    _add(client, "CP-1", 1)
    _add(client, "CP-2", 1)

    response = client.post("/basket/", {"quantity-CP-1": "4", "quantity-CP-2": "0"}, follow=True)

    assert response.redirect_chain == [("/basket/", 302)]
    assert [(line.product.sku, line.quantity) for line in response.context["basket"].lines] == [
        ("CP-1", 4)
    ]
    assert '<span class="total">₩4,000</span>' in response.content.decode()


def test_an_update_out_of_bounds_changes_nothing_and_says_why(client, donuts):
    _add(client, "CP-1", 1)

    response = client.post("/basket/", {"quantity-CP-1": "-2"}, follow=True)

    assert _errors(response) == [
        "Your basket could not be updated (Quantity of Donut 1: "
        "Ensure this value is greater than or equal to 0.)."
    ]
    assert client.session[SESSION_KEY] == {"CP-1": 1}


def test_remove_takes_one_line_out(client, donuts):
    _add(client, "CP-1", 1)
    _add(client, "CP-2", 1)

    response = client.post("/basket/remove/", {"sku": "CP-1"}, follow=True)

    assert response.redirect_chain == [("/basket/", 302)]
    assert client.session[SESSION_KEY] == {"CP-2": 1}


def test_the_basket_pages_forms_need_a_csrf_token(donuts):
    browser = Client(enforce_csrf_checks=True)

    for url in ("/basket/", "/basket/add/", "/basket/remove/", "/basket/order/"):
        assert browser.post(url, {"sku": "CP-1", "quantity": 1}).status_code == 403
    assert not Order.objects.exists()


def test_ordering_the_basket_places_one_basket_order_and_empties_the_basket(client, donuts):
    _add(client, "CP-3", 1)
    _add(client, "CP-1", 2)

    response = client.post("/basket/order/", {"quantity-CP-3": "1", "quantity-CP-1": "2"})

    basket = Basket.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{basket.reference}/"
    lines = basket.lines.order_by("product__sku")
    assert [(o.product.sku, o.quantity, o.channel) for o in lines] == [
        ("CP-1", 2, Order.Channel.WEB),
        ("CP-3", 1, Order.Channel.WEB),
    ]
    assert dict(Product.objects.values_list("sku", "stock")) == {"CP-1": 8, "CP-2": 10, "CP-3": 9}
    assert SESSION_KEY not in client.session
    receipt = client.get(response["Location"]).content.decode()
    assert '<td class="total">₩5,000</td>' in receipt


def test_the_basket_is_ordered_as_the_form_shows_it(client, donuts):
    """Quantities changed on the page and not saved with Update are the ones ordered."""
    _add(client, "CP-1", 1)
    _add(client, "CP-2", 1)

    client.post("/basket/order/", {"quantity-CP-1": "3", "quantity-CP-2": "0"})

    [line] = Basket.objects.get().lines.all()
    assert (line.product.sku, line.quantity) == ("CP-1", 3)


def test_ordering_with_pre_order_passes_backorder_and_email(client, donuts):
    Product.objects.filter(sku="CP-2").update(stock=0)
    _add(client, "CP-1", 1)
    _add(client, "CP-2", 1)

    client.post(
        "/basket/order/",
        {"quantity-CP-1": "1", "quantity-CP-2": "1", "backorder": "on", "email": "a@b.example"},
    )

    basket = Basket.objects.get()
    assert basket.status == Order.Status.BACKORDERED
    waiting = basket.lines.get(product__sku="CP-2")
    assert (waiting.status, waiting.promise.email) == (Order.Status.BACKORDERED, "a@b.example")


def test_an_empty_basket_orders_nothing(client, db):
    response = client.post("/basket/order/", follow=True)

    assert _errors(response) == ["Your basket is empty: add donuts to it first."]
    assert not Basket.objects.exists()


def test_a_basket_with_a_short_line_is_refused_whole_and_kept_its_short_lines_marked(
    client, donuts
):
    Product.objects.filter(sku="CP-2").update(stock=1)
    Product.objects.filter(sku="CP-3").update(stock=0)
    for sku in ("CP-1", "CP-2", "CP-3"):
        _add(client, sku, 2)

    response = client.post(
        "/basket/order/",
        {"quantity-CP-1": "2", "quantity-CP-2": "2", "quantity-CP-3": "2"},
        follow=True,
    )

    assert response.redirect_chain == [("/basket/", 302)]
    assert _errors(response) == [
        "Nothing was ordered: your basket has more than the shelf.",
        "Sorry, only 1 Donut 2 left; you asked for 2.",
        "Sorry, Donut 3 is sold out.",
    ]
    page = response.content.decode()
    assert '<li class="basket-line" id="line-CP-1"' in page
    assert '<li class="basket-line short" id="line-CP-2"' in page
    assert "Only 1 left; you asked for 2</p>" in page
    assert '<li class="basket-line short" id="line-CP-3"' in page
    assert "Sold out</p>" in page
    assert not Order.objects.exists() and not Basket.objects.exists()
    assert client.session[SESSION_KEY] == {"CP-1": 2, "CP-2": 2, "CP-3": 2}
    # Said once: the page drawn again marks no line.
    assert "basket-line short" not in _page(client)

    # The customer takes the last Donut 2 and leaves Donut 3 out: the basket is ordered.
    response = client.post(
        "/basket/order/", {"quantity-CP-1": "2", "quantity-CP-2": "1", "quantity-CP-3": "0"}
    )
    assert response["Location"] == f"/orders/{Basket.objects.get().reference}/"


def test_an_invalid_basket_order_changes_nothing(client, donuts):
    _add(client, "CP-1", 1)

    response = client.post(
        "/basket/order/", {"quantity-CP-1": "1", "email": "not an email"}, follow=True
    )

    assert _errors(response) == [
        "Your basket could not be ordered (Email for the ready notice (optional): "
        "Enter a valid email address.)."
    ]
    assert not Order.objects.exists()
    assert client.session[SESSION_KEY] == {"CP-1": 1}


@pytest.mark.django_db(transaction=True)
def test_the_purchase_limit_holds_per_line_of_a_basket(client, donuts, settings):
    settings.PURCHASE_LIMIT = 3
    client.post("/order/", {"sku": "CP-2", "quantity": 2})
    _add(client, "CP-1", 3)
    _add(client, "CP-2", 2)

    response = client.post(
        "/basket/order/", {"quantity-CP-1": "3", "quantity-CP-2": "2"}, follow=True
    )

    assert _errors(response) == ["Sorry, one customer may buy 3 × Donut 2 at most (you have 2)."]
    assert Order.objects.count() == 1  # the one-donut order before
    assert client.session[SESSION_KEY] == {"CP-1": 3, "CP-2": 2}


def test_the_rate_limit_holds_for_basket_orders(client, donuts, settings):
    settings.ORDER_RATE_LIMIT = "1/m"
    client.post("/order/", {"sku": "CP-1", "quantity": 1})
    _add(client, "CP-2", 1)

    response = client.post("/basket/order/", {"quantity-CP-2": "1"}, follow=True)

    [error] = _errors(response)
    assert error.startswith("Too many orders at once; try again in")
    assert not Basket.objects.exists()
    assert client.session[SESSION_KEY] == {"CP-2": 1}


def test_a_basket_order_is_the_same_customer_as_a_one_donut_order(client, donuts):
    client.post("/order/", {"sku": "CP-1", "quantity": 1})
    _add(client, "CP-2", 1)

    client.post("/basket/order/", {"quantity-CP-2": "1"})

    assert len(set(Order.objects.values_list("customer", flat=True))) == 1
    assert Order.objects.count() == 2
