"""The Sales API's docs (Swagger UI) in a real browser, under the Content-Security-Policy."""

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def test_swagger_ui_shows_the_api_with_no_inline_code(live_server, page: Page) -> None:
    page.goto(f"{live_server.url}/api/docs/")

    expect(page.locator(".swagger-ui .title")).to_contain_text("Nudged Sales API")
    expect(page.locator(".opblock-summary-path", has_text="/api/orders/").first).to_be_visible()
    # The page's own style (from a static file) applies: the body is not the browser default.
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
