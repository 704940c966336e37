"""A box of donuts: several kinds in one order, all or nothing (shop.services.place_basket)."""

import random
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from inventory.models import Product
from shop.exceptions import BasketShort
from shop.models import Basket, Order
from shop.sales import OrderLedger
from shop.services import Line, place_basket

pytestmark = pytest.mark.usefixtures("no_events")


def _post(body: object, **headers: str):  # type: ignore[no-untyped-def]
    return APIClient().post("/api/orders/", body, format="json", **headers)


def _stocks() -> dict[str, int]:
    return dict(Product.objects.values_list("sku", "stock"))


@pytest.mark.django_db(transaction=True)
def test_a_basket_takes_every_line_and_answers_its_lines_and_total(donuts):
    body = {"items": [{"sku": "cp-3", "quantity": 1}, {"sku": "CP-1", "quantity": 2}]}

    answer = _post(body)

    assert answer.status_code == 201, answer.content
    placed = answer.json()
    assert placed["status"] == "completed"
    assert placed["total"] == 3000 + 2 * 1000
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in placed["lines"]] == [
        ("CP-3", 1, 3000),
        ("CP-1", 2, 1000),
    ]
    assert _stocks() == {"CP-1": 8, "CP-2": 10, "CP-3": 9}
    basket = Basket.objects.get(reference=placed["reference"])
    assert sorted(basket.lines.values_list("product__sku", "quantity", "status")) == [
        ("CP-1", 2, "completed"),
        ("CP-3", 1, "completed"),
    ]
    # Every line is a sale of its own in the sales feed.
    sales = OrderLedger().unpublished(limit=10)
    assert sorted((sale.sku, sale.quantity) for sale in sales) == [("CP-1", 2), ("CP-3", 1)]


@pytest.mark.django_db(transaction=True)
def test_a_basket_with_a_short_line_is_refused_whole_naming_each_short_line(donuts):
    Product.objects.filter(sku="CP-2").update(stock=1)
    Product.objects.filter(sku="CP-3").update(stock=0)
    body = {
        "items": [
            {"sku": "CP-1", "quantity": 2},
            {"sku": "CP-2", "quantity": 3},
            {"sku": "CP-3", "quantity": 1},
        ]
    }

    answer = _post(body)

    assert answer.status_code == 409, answer.content
    refused = answer.json()
    assert refused["code"] == "out_of_stock"
    assert refused["lines"] == [
        {"sku": "CP-2", "requested": 3, "available": 1},
        {"sku": "CP-3", "requested": 1, "available": 0},
    ]
    assert "CP-2 (only 1 left, 3 requested)" in refused["detail"]
    assert _stocks() == {"CP-1": 10, "CP-2": 1, "CP-3": 0}
    assert not Order.objects.exists() and not Basket.objects.exists()
    # The short lines count as refused demand; the line that could be served does not.
    refusals = dict(Product.objects.values_list("sku", "units_refused"))
    assert refusals == {"CP-1": 0, "CP-2": 3, "CP-3": 1}


@pytest.mark.django_db(transaction=True)
def test_the_purchase_limit_holds_per_line(donuts, settings):
    settings.PURCHASE_LIMIT = 3
    assert _post({"items": [{"sku": "CP-1", "quantity": 3}]}).status_code == 201

    answer = _post({"items": [{"sku": "CP-2", "quantity": 3}, {"sku": "CP-1", "quantity": 1}]})

    assert answer.status_code == 409, answer.content
    assert (answer.json()["code"], answer.json()["sku"]) == ("purchase_limit", "CP-1")
    assert _stocks() == {"CP-1": 7, "CP-2": 10, "CP-3": 10}
    assert Order.objects.count() == 1
    # Another donut is its own limit.
    assert _post({"items": [{"sku": "CP-2", "quantity": 3}]}).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ("CP-1", "items"),
        ([{"sku": "CP-1", "quantity": 1}] * 2, "items"),
        ([{"sku": "CP-1", "quantity": 1}, {"sku": "cp-1", "quantity": 2}], "items"),
        ([{"sku": "CP-1", "quantity": 0}], "items.0.quantity"),
        ([{"sku": "CP-1", "quantity": 1}, {"quantity": 1}], "items.1.sku"),
        ([{"sku": "CP-1", "quantity": 1}, "CP-2"], "items.1"),
        ([{"sku": f"CP-{n}", "quantity": 1} for n in range(13)], "items"),
    ],
)
def test_a_bad_basket_is_a_400_naming_its_field(donuts, items, field):
    answer = _post({"items": items})

    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"]
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_an_unknown_sku_in_a_basket_is_a_404_naming_it(donuts):
    answer = _post({"items": [{"sku": "CP-1", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]})

    assert answer.status_code == 404
    assert answer.json()["sku"] == "NOPE"
    assert _stocks()["CP-1"] == 10


@pytest.mark.django_db(transaction=True)
def test_with_backorder_the_short_lines_wait_and_the_basket_is_ready_when_its_last_is(donuts):
    Product.objects.filter(sku="CP-2").update(stock=0)
    body = {
        "items": [{"sku": "CP-1", "quantity": 1}, {"sku": "CP-2", "quantity": 2}],
        "backorder": True,
        "email": "box@example.com",
    }

    answer = _post(body)

    assert answer.status_code == 201, answer.content
    placed = answer.json()
    assert placed["status"] == "backordered"
    assert [line["status"] for line in placed["lines"]] == ["completed", "backordered"]
    assert placed["ready_by"] == placed["lines"][1]["ready_by"]
    receipt = APIClient().get(f"/api/orders/{placed['reference']}/").json()
    assert receipt["status"] == "backordered"
    assert receipt["total_price"] == 1000 + 2 * 2000
    assert [line["sku"] for line in receipt["lines"]] == ["CP-1", "CP-2"]


@pytest.mark.django_db(transaction=True)
def test_the_receipt_page_lists_the_lines_and_the_total(client, donuts):
    placed = _post(
        {"items": [{"sku": "CP-1", "quantity": 2}, {"sku": "CP-2", "quantity": 1}]}
    ).json()

    page = client.get(f"/orders/{placed['reference']}/").content.decode()

    assert "Donut 1" in page and "Donut 2" in page
    assert "₩4,000" in page  # 2 × 1,000 + 2,000


@pytest.mark.django_db(transaction=True)
def test_fifty_baskets_at_once_over_the_same_donuts_never_deadlock_or_oversell(donuts):
    """Baskets of one to three donuts, their lines in random order, released together."""
    Product.objects.update(stock=40)
    rng = random.Random(7)
    skus = ["CP-1", "CP-2", "CP-3"]
    baskets = [
        [Line(sku=sku, quantity=rng.randint(1, 3)) for sku in rng.sample(skus, rng.randint(1, 3))]
        for _ in range(50)
    ]
    barrier = threading.Barrier(len(baskets))
    placed: list[list[Line]] = []
    errors: list[BaseException] = []

    def buy(lines: list[Line]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            try:
                place_basket(lines=lines, customer="c", address="a")
            except BasketShort:
                return
            placed.append(lines)
        except BaseException as exc:  # handed back to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=buy, args=(lines,)) for lines in baskets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(thread.is_alive() for thread in threads), "a buyer thread hung"
    assert errors == []
    sold = {
        sku: sum(line.quantity for lines in placed for line in lines if line.sku == sku)
        for sku in skus
    }
    assert all(stock >= 0 for stock in _stocks().values())
    assert {sku: 40 - stock for sku, stock in _stocks().items()} == sold
    rows = dict.fromkeys(sold, 0)
    for sku, quantity in Order.objects.values_list("product__sku", "quantity"):
        rows[sku] += quantity
    assert rows == sold
    assert Basket.objects.count() == len(placed) > 0


@pytest.mark.django_db
def test_staff_see_a_basket_with_its_lines_inline(client, admin_user, donuts):
    placed = place_basket(lines=[Line(sku="CP-1", quantity=2), Line(sku="CP-2", quantity=1)])
    basket = Basket.objects.get(reference=placed.reference)
    client.force_login(admin_user)

    listed = client.get("/admin/shop/basket/").content.decode()
    page = client.get(f"/admin/shop/basket/{basket.pk}/change/").content.decode()

    assert placed.reference in listed and "4000" in listed.replace(",", "")
    assert "CP-1 Donut 1" in page and "CP-2 Donut 2" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", [1213, 1205])
def test_a_deadlock_or_lock_timeout_is_retried_not_answered_500(donuts, monkeypatch, code):
    """MariaDB ends a transaction as a deadlock (1213) or a lock wait times out (1205): the
    basket is placed again, and the client never sees it."""
    from django.db import OperationalError

    from shop import services

    real, failures = services._quick_basket, [OperationalError(code, "try restarting")]

    def once(**kwargs):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return real(**kwargs)

    monkeypatch.setattr(services, "_quick_basket", once)

    answer = _post({"items": [{"sku": "CP-1", "quantity": 1}, {"sku": "CP-2", "quantity": 1}]})

    assert answer.status_code == 201, answer.content
    assert _stocks() == {"CP-1": 9, "CP-2": 9, "CP-3": 10}
    assert Basket.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_deadlock_every_time_gives_up_after_the_attempts_with_a_503(donuts, monkeypatch):
    from django.db import OperationalError

    from shop import services

    def always(**kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError(1213, "Deadlock found")

    monkeypatch.setattr(services, "_quick_basket", always)

    answer = _post({"items": [{"sku": "CP-1", "quantity": 1}]})

    assert answer.status_code == 503, answer.content
    assert _stocks()["CP-1"] == 10
