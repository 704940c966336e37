"""The customer's journey in a real browser: buy out a donut, see it restocked, buy again."""

import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from shop.models import Order
from tests.browser import MOBILE, wait_until
from tests.restocks import plant_restock

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


def buy(page: Page, quantity: int, *, left: int, url: str) -> None:
    """Order from the storefront at `url`, check the receipt, and go back to the storefront."""
    order(page, quantity)
    expect(page.locator(".receipt h1")).to_have_text("Thank you, your order is confirmed")
    expect(page.locator(".receipt .quantity")).to_have_text(str(quantity))
    page.goto(url)
    expect(page.locator(f"#product-{SKU} .stock")).to_have_text(
        f"{left} in stock" if left else "Sold out"
    )


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

    buy(page, 1, left=2, url=live_server.url)
    buy(page, 1, left=1, url=live_server.url)

    order(late_customer, 2)
    expect(late_customer.locator(".msg-error")).to_have_text(
        "Sorry, only 1 부산도너츠 left; you asked for 2."
    )

    buy(page, 1, left=0, url=live_server.url)
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
    buy(page, 2, left=8, url=live_server.url)
    assert Order.objects.filter(status=Order.Status.COMPLETED).count() == 4


def test_ordering_works_without_javascript(
    live_server, no_events, product, new_context: Callable[..., BrowserContext]
) -> None:
    page = new_context(java_script_enabled=False).new_page()
    page.goto(live_server.url)

    order(page, 2)

    placed = Order.objects.get()
    assert page.url == f"{live_server.url}/orders/{placed.reference}/"
    expect(page.locator(".receipt .total")).to_have_text("₩39,800")
    page.goto(live_server.url)
    expect(page.locator(f"#product-{SKU} .stock")).to_have_text("1 in stock")
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


def test_the_receipt_after_ordering_survives_a_reload(
    live_server, no_events, product, page: Page, screenshot: Callable[[Page, str], object]
) -> None:
    page.goto(live_server.url)

    order(page, 2)

    placed = Order.objects.get()
    assert page.url == f"{live_server.url}/orders/{placed.reference}/"
    receipt = page.locator(".receipt")
    for reading in (1, 2):
        expect(receipt.locator(".number")).to_have_text(placed.reference)
        expect(receipt.locator(".donut")).to_have_text("부산도너츠")
        expect(receipt.locator(".quantity")).to_have_text("2")
        expect(receipt.locator(".unit-price")).to_have_text("₩19,900")
        expect(receipt.locator(".total")).to_have_text("₩39,800")
        expect(receipt.locator(".time")).to_have_text(re.compile(r"^\d{4}(-\d\d){2} [\d:]{8}$"))
        if reading == 1:
            screenshot(page, "receipt.png")
            page.reload()


def test_the_open_page_shows_stock_changes_without_a_reload(
    live_server, no_events, shelf, page: Page, screenshot: Callable[[Page, str], object]
) -> None:
    page.goto(live_server.url)
    card = page.locator(f"#product-{SKU}")
    matcha = page.locator("#product-CP-502105")
    expect(card.locator(".stock")).to_have_text("3 in stock")
    page.evaluate("window.loaded = true")  # gone if the page reloads

    Product.objects.filter(sku=SKU).update(stock=7)
    expect(card.locator(".stock")).to_have_text("7 in stock", timeout=10_000)
    assert card.get_by_label("Quantity").get_attribute("max") == "7"

    # Sold out and back in stock: the card changes shape, and its form still orders.
    Product.objects.filter(sku=SKU).update(stock=0)
    expect(card.locator(".stock")).to_have_text("Sold out", timeout=15_000)
    expect(card.get_by_role("button", name="Order", exact=True)).to_have_count(0)
    expect(card.get_by_role("button", name="Notify me")).to_be_visible()
    Product.objects.filter(sku="CP-502105").update(stock=4)
    expect(matcha.locator(".stock")).to_have_text("4 in stock", timeout=15_000)

    # The factory accepts a restock for the sold-out donut: the page says when it arrives.
    plant_restock(
        Product.objects.get(sku=SKU),
        RestockRequest.Status.REQUESTED,
        depletion_key="depletion-live",
        requested_at=timezone.now(),
    )
    expect(card.locator(".restock")).to_have_text(
        re.compile(r"^10 more are being made — about [1-4]?\d s$"),
        timeout=15_000,
    )
    assert page.evaluate("window.loaded") is True
    screenshot(page, "storefront-live.png")

    with page.expect_navigation():
        matcha.get_by_role("button", name="Order").click()
    expect(page.locator(".receipt .donut")).to_have_text("제주 말차 도넛")


def _batch_lands() -> None:
    """The sold-out donut's batch arrives, as the factory's callback would bring it."""
    from django.db import transaction

    from inventory.models import ReorderDecision
    from inventory.services import receive_stock

    batch = ReorderDecision.objects.get()
    with transaction.atomic():
        receive_stock(
            product_id=batch.product_id, quantity=batch.quantity, note="", batch_id=batch.pk
        )


def pre_order(page: Page, sku: str) -> None:
    card = page.locator(f"#product-{sku}")
    button = card.get_by_role("button", name=re.compile(r"^Take one from the next batch"))
    expect(button).to_have_text(re.compile(r"ready in about \d+ s$"))
    with page.expect_navigation():
        button.click()


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_sold_out_card_takes_a_pre_order_and_its_receipt_turns_ready(
    live_server, no_events, shelf, new_context: Callable[..., BrowserContext], javascript: bool
) -> None:
    page = new_context(java_script_enabled=javascript).new_page()
    page.goto(live_server.url)

    pre_order(page, "CP-502105")

    placed = Order.objects.get()
    assert placed.status == Order.Status.BACKORDERED
    assert page.url == f"{live_server.url}/orders/{placed.reference}/"
    expect(page.locator(".receipt h1")).to_have_text("Your pre-order is confirmed")
    expect(page.locator(".receipt .state")).to_contain_text("Ready by")
    url = page.url

    _batch_lands()

    if not javascript:
        page.goto(url)
    # With JavaScript the receipt changes in place: the page was not loaded again.
    expect(page.locator(".receipt h1")).to_have_text("Thank you, your order is confirmed")
    expect(page.locator(".receipt .state.ready")).to_contain_text("Ready: served")
    assert page.url == url
