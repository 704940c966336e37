"""Back-in-stock alerts in a real browser: the form on a sold-out card, with and without JS,
then the link of the confirmation email: its page, and the button that confirms."""

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from django.core import mail
from playwright.sync_api import BrowserContext, expect

from inventory.alerts import send_due_mail
from inventory.models import StockAlert
from tests.browser.test_storefront import shelf  # noqa: F401

pytestmark = pytest.mark.browser

SOLD_OUT = "CP-502105"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_customer_asks_to_hear_when_a_sold_out_donut_is_back(
    live_server,
    shelf,  # noqa: F811
    new_context: Callable[..., BrowserContext],
    screenshot: Callable[..., object],
    javascript: bool,
) -> None:
    page = new_context(java_script_enabled=javascript).new_page()
    page.goto(live_server.url)
    card = page.locator(f"#product-{SOLD_OUT}")
    expect(card.locator(".stock")).to_have_text("Sold out")

    card.get_by_label("Tell me when it's back").fill("jimin@example.com")
    with page.expect_navigation():
        card.get_by_role("button", name="Notify me").click()

    expect(page.locator(".messages .msg")).to_have_text(
        "Almost done: follow the link we email to jimin@example.com, and we will write once "
        "when 제주 말차 도넛 is back."
    )
    if javascript:
        screenshot(page, "storefront-alert.png")
    assert StockAlert.objects.get().confirmed_at is None

    send_due_mail()
    [confirmation] = mail.outbox
    link = next(word for word in confirmation.body.split() if "/alerts/confirm/" in word)
    page.goto(live_server.url + urlsplit(link).path)
    expect(page.locator("h1")).to_have_text("Confirm your alert")
    assert StockAlert.objects.get().confirmed_at is None
    with page.expect_navigation():
        page.get_by_role("button", name="Confirm").click()

    expect(page.locator(".messages .msg")).to_have_text(
        "Confirmed: we will email jimin@example.com once when 제주 말차 도넛 is back."
    )
    assert list(StockAlert.objects.values_list("product__sku", "email", "waiting")) == [
        (SOLD_OUT, "jimin@example.com", True)
    ]
    assert StockAlert.objects.get().confirmed_at is not None
