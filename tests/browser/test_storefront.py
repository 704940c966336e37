"""The customer's journey in a real browser: buy out a donut, see it restocked, buy again."""

import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from factory_bridge.models import RestockRequest
from factory_bridge.services.restock import consume_restock
from factory_bridge.simulator import FactorySimulator
from inventory.models import Product
from shop.models import Order
from tests.browser import MOBILE, wait_until

pytestmark = pytest.mark.browser

SKU = "CP-502101"


@pytest.fixture
def shelf(product, factory):  # type: ignore[no-untyped-def]
    """부산도너츠 (3 left) between a well-stocked donut and one that is sold out."""
    Product.objects.create(
        sku="CP-502102",
        name="우유 생크림 도넛",
        description="폭신한 브리오슈에 우유 생크림을 가득 채웠어요.",
        price=3900,
        stock=12,
        factory=factory,
    )
    Product.objects.create(
        sku="CP-502105", name="제주 말차 도넛", price=4500, stock=0, factory=factory
    )
    return product


@pytest.fixture
def factory_simulator(start_factory) -> FactorySimulator:  # type: ignore[no-untyped-def]
    """The legacy factory over HTTP, calling back the live server one second after an order."""
    return start_factory(1.0)


def order(page: Page, quantity: int, sku: str = SKU) -> None:
    """Fill the card's quantity and press Order; wait for the page the redirect lands on."""
    card = page.locator(f"#product-{sku}")
    card.get_by_label("Quantity").fill(str(quantity))
    with page.expect_navigation():
        card.get_by_role("button", name="Order").click()


def confirmation(left: int, quantity: int = 1) -> re.Pattern[str]:
    return re.compile(rf"^Order #\d+ confirmed: {quantity} × 부산도너츠\. {left} left\.$")


def test_customer_buys_out_a_donut_then_buys_again_after_the_factory_restocks(
    live_server,
    aws,
    shelf,
    factory_simulator: FactorySimulator,
    page: Page,
    new_context: Callable[..., BrowserContext],
    screenshot: Callable[[Page, str], object],
) -> None:
    page.goto(live_server.url)
    card = page.locator(f"#product-{SKU}")
    expect(card.locator(".name")).to_have_text("부산도너츠")
    expect(card.locator(".price")).to_have_text("₩19,900")
    expect(card.locator(".stock")).to_have_text("3 in stock")
    expect(page.locator("#product-CP-502105 .stock")).to_have_text("Sold out")
    screenshot(page, "storefront.png")

    # The browser itself refuses more than the page says is left.
    quantity = card.get_by_label("Quantity")
    quantity.fill("4")
    card.get_by_role("button", name="Order").click()
    assert quantity.evaluate("input => input.validity.rangeOverflow")
    assert not Order.objects.exists()

    # A second customer opens the page while 3 are left and orders later.
    late_customer = new_context().new_page()
    late_customer.goto(live_server.url)

    messages = page.locator(".messages .msg")
    order(page, 1)
    expect(messages).to_have_text(confirmation(left=2))
    expect(page.locator(".msg-success")).to_have_count(1)
    order(page, 1)
    expect(messages).to_have_text(confirmation(left=1))

    order(late_customer, 2)
    expect(late_customer.locator(".msg-error")).to_have_text(
        "Sorry, 부산도너츠 is sold out for that quantity: 1 left, you asked for 2."
    )

    order(page, 1)
    expect(messages).to_have_text(confirmation(left=0))
    expect(card.locator(".stock")).to_have_text("Sold out")
    # No order form any more; the back-in-stock form takes its place.
    expect(card.get_by_role("button", name="Order", exact=True)).to_have_count(0)
    expect(card.get_by_role("button", name="Notify me")).to_be_visible()
    assert Product.objects.get(sku=SKU).stock == 0

    # The depletion went out over SNS; the restock consumer orders from the factory.
    def ordered_from_factory() -> list[dict[str, Any]]:
        consume_restock(wait=1)
        return factory_simulator.received

    received = wait_until(ordered_from_factory, timeout=10, step=0)
    assert received[0]["body"]["MessageAttributeProductId"] == SKU
    page.reload()
    expect(card.locator(".stock")).to_have_text("Sold out")
    expect(card.locator(".restock")).to_contain_text("10 more are being made")
    screenshot(page, "storefront-sold-out.png")

    # The factory calls back one second later; the stock arrives.
    wait_until(
        lambda: RestockRequest.objects.filter(
            product__sku=SKU, status=RestockRequest.Status.FULFILLED
        ).exists(),
        timeout=10,
    )
    page.reload()
    expect(card.locator(".stock")).to_have_text("10 in stock")
    expect(card.locator(".restock")).to_have_count(0)
    order(page, 2)
    expect(messages).to_have_text(confirmation(left=8, quantity=2))
    assert Order.objects.filter(status=Order.Status.COMPLETED).count() == 4


def test_ordering_works_without_javascript(
    live_server, no_events, product, new_context: Callable[..., BrowserContext]
) -> None:
    page = new_context(java_script_enabled=False).new_page()
    page.goto(live_server.url)

    order(page, 2)

    expect(page.locator(".msg-success")).to_have_text(confirmation(left=1, quantity=2))
    expect(page.locator(f"#product-{SKU} .stock")).to_have_text("1 in stock")
    placed = Order.objects.get()
    assert (placed.quantity, placed.channel) == (2, Order.Channel.WEB)


def test_mobile_shows_one_column_without_horizontal_scroll(
    live_server,
    no_events,
    shelf,
    new_context: Callable[..., BrowserContext],
    screenshot: Callable[[Page, str], object],
) -> None:
    page = new_context(viewport=MOBILE, is_mobile=True, has_touch=True).new_page()
    page.goto(live_server.url)

    cards = page.locator(".products .card")
    expect(cards).to_have_count(3)
    boxes = []
    for i in range(3):
        box = cards.nth(i).bounding_box()
        assert box is not None
        boxes.append(box)
    assert len({round(box["x"]) for box in boxes}) == 1, boxes
    for upper, lower in itertools.pairwise(boxes):
        assert upper["y"] + upper["height"] <= lower["y"], boxes
    assert page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    screenshot(page, "storefront-mobile.png")
