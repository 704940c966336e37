"""Operator commands load_catalog and set_stock: thin, audited, clear errors."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from inventory.models import Factory, Product, StockAdjustment

pytestmark = pytest.mark.usefixtures("no_events")


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_load_catalog_twice(db):
    first = _run("load_catalog")
    counts = (Factory.objects.count(), Product.objects.count())
    second = _run("load_catalog")

    total = counts[1]
    assert f"{total} created, 0 already present" in first
    assert f"0 created, {total} already present" in second
    assert (Factory.objects.count(), Product.objects.count()) == counts
    donut = Product.objects.select_related("factory").get(sku="CP-502101")
    assert (donut.name, donut.price, donut.stock) == ("부산도너츠", 19900, 3)
    assert donut.factory.code == "FF-500293"
    assert donut.factory.manager_email == "dob_factory@codeatates.com"


def test_set_stock(product):
    out = _run("set_stock", "CP-502101", "7")

    product.refresh_from_db()
    assert product.stock == 7
    adjustment = StockAdjustment.objects.get()
    assert adjustment.product == product
    assert adjustment.reason == StockAdjustment.Reason.COUNT
    assert (adjustment.old_quantity, adjustment.new_quantity) == (3, 7)
    assert adjustment.note == "physical count"
    assert "CP-502101: 3 → 7" in out


def test_set_stock_with_note(product):
    _run("set_stock", "CP-502101", "0", "--note", "dropped a tray")

    adjustment = StockAdjustment.objects.get()
    assert (adjustment.old_quantity, adjustment.new_quantity) == (3, 0)
    assert adjustment.note == "dropped a tray"


def test_set_stock_with_a_note_too_long_says_so_in_one_line(product):
    with pytest.raises(CommandError) as error:
        _run("set_stock", "CP-502101", "7", "--note", "x" * 201)

    assert str(error.value) == "The note is 201 characters long; at most 200 are kept."
    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


def test_set_stock_says_it_decides_no_reorder_itself(product, settings):
    settings.STOCK_COUNT_SETTLE = 30

    out = _run("set_stock", "CP-502101", "0")

    assert "No reorder decided now: if the stock still calls for one in 30 s" in out
    assert not product.decisions.exists()


def test_set_stock_unknown_sku(product):
    with pytest.raises(CommandError, match="NOPE-1"):
        _run("set_stock", "NOPE-1", "7")

    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


@pytest.mark.parametrize("quantity", ["-1", "-100"])
def test_set_stock_negative(product, quantity):
    with pytest.raises(CommandError, match="negative"):
        _run("set_stock", "CP-502101", quantity)

    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


@pytest.mark.parametrize("quantity", ["99999999999", "2147483648"])
def test_set_stock_beyond_what_the_column_holds(product, quantity):
    with pytest.raises(CommandError, match="less than or equal to 2147483647"):
        _run("set_stock", "CP-502101", quantity)

    product.refresh_from_db()
    assert product.stock == 3
    assert not StockAdjustment.objects.exists()


def test_set_stock_not_a_number(product):
    with pytest.raises(CommandError):
        _run("set_stock", "CP-502101", "seven")

    assert not StockAdjustment.objects.exists()


def test_set_stock_clears_the_depletion(product):
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())

    _run("set_stock", "CP-502101", "4")

    product.refresh_from_db()
    assert product.stock == 4
    assert product.depleted_at is None
