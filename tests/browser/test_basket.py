"""A box of donuts in a real browser: fill the basket, change it, order it whole or not at all."""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from inventory.models import Product
from shop.models import Basket, Order
from tests.browser import MOBILE

pytestmark = pytest.mark.browser


@pytest.fixture
def box(factory) -> list[Product]:  # type: ignore[no-untyped-def]
    """Four donuts, ten of each on the shelf."""
    names = {1: "부산도너츠", 2: "우유 생크림 도넛", 3: "제주 말차 도넛", 4: "초코 도넛"}
    return [
        Product.objects.create(sku=f"CP-{n}", name=name, price=1000 * n, stock=10, factory=factory)
        for n, name in names.items()
    ]


def add(page: Page, sku: str, quantity: int) -> None:
    """Fill the card's quantity and press Add to basket; wait for the storefront again."""
    card = page.locator(f"#product-{sku}")
    card.get_by_label("Quantity").fill(str(quantity))
    with page.expect_navigation():
        card.get_by_role("button", name="Add to basket").click()


def line(page: Page, sku: str):  # type: ignore[no-untyped-def]
    return page.locator(f"#line-{sku}")


def open_basket(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name=re.compile(r"^Basket")).click()
    expect(page.locator("h1")).to_have_text("Your basket")


def press(page: Page, name: str) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name=name, exact=True).click()


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_customer_fills_a_basket_of_three_kinds_changes_it_and_orders_it(
    live_server,
    no_events,
    box,
    new_context: Callable[..., BrowserContext],
    screenshot: Callable[[Page, str], object],
    javascript: bool,
) -> None:
    page = new_context(java_script_enabled=javascript).new_page()
    page.goto(live_server.url)

    add(page, "CP-1", 2)
    expect(page.locator(".msg-success")).to_have_text("Your basket has 2 × 부산도너츠.")
    add(page, "CP-2", 1)
    add(page, "CP-3", 3)
    add(page, "CP-4", 1)
    add(page, "CP-1", 1)
    expect(page.locator(".basket-link .count")).to_have_text("8")

    open_basket(page)
    expect(page.locator(".basket-line .donut")).to_have_text(
        ["부산도너츠", "우유 생크림 도넛", "제주 말차 도넛", "초코 도넛"]
    )
    expect(line(page, "CP-1").get_by_label("Quantity")).to_have_value("3")
    expect(line(page, "CP-3").locator(".price")).to_have_text("₩9,000")
    expect(page.locator(".basket-total .total")).to_have_text("₩18,000")

    # Take the chocolate one out, and make it one matcha instead of three.
    with page.expect_navigation():
        line(page, "CP-4").get_by_role("button", name="Remove").click()
    expect(page.locator(".basket-line")).to_have_count(3)
    line(page, "CP-3").get_by_label("Quantity").fill("1")
    press(page, "Update quantities")
    expect(line(page, "CP-3").locator(".price")).to_have_text("₩3,000")
    expect(page.locator(".basket-total .total")).to_have_text("₩8,000")
    if javascript:
        screenshot(page, "storefront-basket.png")

    # One more 부산도너츠, typed and ordered straight away: the page's quantities are ordered.
    line(page, "CP-1").get_by_label("Quantity").fill("4")
    press(page, "Order the basket")

    basket = Basket.objects.get()
    assert page.url == f"{live_server.url}/orders/{basket.reference}/"
    receipt = page.locator(".receipt")
    expect(receipt.locator("h1")).to_have_text("Thank you, your order is confirmed")
    expect(receipt.locator(".line .donut")).to_have_text(
        ["부산도너츠", "우유 생크림 도넛", "제주 말차 도넛"]
    )
    expect(receipt.locator(".line .quantity")).to_have_text(["4", "1", "1"])
    expect(receipt.locator(".total")).to_have_text("₩9,000")
    stock = dict(Product.objects.values_list("sku", "stock"))
    assert stock == {"CP-1": 6, "CP-2": 9, "CP-3": 9, "CP-4": 10}
    assert set(basket.lines.values_list("channel", flat=True)) == {Order.Channel.WEB}

    # The basket is empty once ordered.
    page.goto(live_server.url)
    expect(page.locator(".basket-link .count")).to_have_count(0)
    open_basket(page)
    expect(page.locator(".empty")).to_contain_text("Your basket is empty")


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_basket_with_a_sold_out_kind_is_refused_whole_with_the_reason_shown(
    live_server,
    no_events,
    box,
    new_context: Callable[..., BrowserContext],
    javascript: bool,
) -> None:
    page = new_context(java_script_enabled=javascript).new_page()
    page.goto(live_server.url)
    add(page, "CP-1", 2)
    add(page, "CP-2", 1)
    add(page, "CP-3", 1)
    open_basket(page)

    # Someone else takes the last matcha donuts while this customer looks at the basket.
    Product.objects.filter(sku="CP-3").update(stock=0)
    press(page, "Order the basket")

    assert page.url == f"{live_server.url}/basket/"
    expect(page.locator(".msg-error")).to_have_text(
        [
            "Nothing was ordered: your basket has more than the shelf.",
            "Sorry, 제주 말차 도넛 is sold out.",
        ]
    )
    expect(line(page, "CP-3")).to_have_class(re.compile(r"\bshort\b"))
    expect(line(page, "CP-3").locator(".short-note")).to_have_text("Sold out")
    expect(line(page, "CP-1")).not_to_have_class(re.compile(r"\bshort\b"))
    expect(page.locator(".basket-line")).to_have_count(3)
    assert not Order.objects.exists()
    assert dict(Product.objects.values_list("sku", "stock"))["CP-1"] == 10

    # The customer takes the sold-out kind out and orders the rest.
    with page.expect_navigation():
        line(page, "CP-3").get_by_role("button", name="Remove").click()
    press(page, "Order the basket")
    expect(page.locator(".receipt .line .donut")).to_have_text(["부산도너츠", "우유 생크림 도넛"])


def test_the_basket_fits_a_narrow_phone(
    live_server, no_events, box, new_context: Callable[..., BrowserContext]
) -> None:
    width = 375
    page = new_context(
        viewport={**MOBILE, "width": width}, is_mobile=True, has_touch=True
    ).new_page()
    page.goto(live_server.url)
    for sku in ("CP-1", "CP-2", "CP-3"):
        add(page, sku, 2)
    open_basket(page)

    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for control in (
        line(page, "CP-3").get_by_label("Quantity"),
        line(page, "CP-3").get_by_role("button", name="Remove"),
        line(page, "CP-3").locator(".price"),
        page.get_by_role("button", name="Update quantities"),
        page.get_by_role("button", name="Order the basket"),
    ):
        box = control.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    press(page, "Order the basket")
    expect(page.locator(".receipt .line")).to_have_count(3)
