"""The staff's journey in a real browser: stock, restock requests, dead messages and redrive."""

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Locator, Page, expect

from factory_bridge.models import FailedMessage, RestockRequest
from factory_bridge.queues import SqsQueue
from factory_bridge.services.dlq import watch_dlq
from factory_bridge.services.restock.consumer import consume_restock
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from shop.models import Order
from shop.services import place_order
from tests.browser import wait_until
from tests.factory_bridge.sqs import depletion_envelope

pytestmark = pytest.mark.browser

PASSWORD = "glazed-and-confused-42"
SOLD_OUT_SKU = "CP-502105"


@pytest.fixture
def staff(django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_superuser(
        username="manager", email="ops@nudged.kr", password=PASSWORD
    )


@pytest.fixture
def admin_page(live_server, staff, page: Page) -> Page:
    """A browser logged in through the real admin login form."""
    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/")
    return page


@pytest.fixture
def factory_simulator(start_factory) -> FactorySimulator:  # type: ignore[no-untyped-def]
    """A factory slow enough that its restocks stay in production during the test."""
    return start_factory(60.0)


def row(page: Page, text: str) -> Locator:
    return page.locator("#result_list tbody tr", has_text=text)


def test_staff_sees_stock_and_restock_requests(
    live_server,
    aws,
    product,
    factory_simulator: FactorySimulator,
    admin_page: Page,
    screenshot: Callable[[Page, str], object],
) -> None:
    Product.objects.create(
        sku=SOLD_OUT_SKU, name="제주 말차 도넛", price=4500, stock=2, factory=product.factory
    )
    place_order(sku=SOLD_OUT_SKU, quantity=2, channel=Order.Channel.WEB)

    def ordered_from_factory() -> list[dict[str, Any]]:
        consume_restock(wait=1)
        return factory_simulator.received

    wait_until(ordered_from_factory, timeout=10, step=0)
    restock = RestockRequest.objects.get()
    page = admin_page

    page.get_by_role("link", name="Products").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(row(page, "CP-502101").locator(".field-stock input[type=number]")).to_have_value("3")
    expect(row(page, "CP-502101").locator(".field-incoming")).to_have_text("0")
    expect(row(page, SOLD_OUT_SKU).locator(".field-stock input[type=number]")).to_have_value("0")
    expect(row(page, SOLD_OUT_SKU).locator(".field-incoming")).to_have_text("10")
    screenshot(page, "admin-products.png")

    page.locator("#changelist-filter").get_by_role("link", name="Sold out", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/admin/inventory/product/?sold_out=yes")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(row(page, SOLD_OUT_SKU)).to_contain_text("제주 말차 도넛")

    # The product page lists its open restock requests.
    page.get_by_role("link", name=SOLD_OUT_SKU).click()
    inline = page.locator("fieldset", has_text="Restock requests in progress or failed")
    expect(inline).to_contain_text("In production")
    expect(inline).to_contain_text(restock.factory_job_id)

    page.goto(f"{live_server.url}/admin/")
    page.get_by_role("link", name="Restock requests", exact=True).click()
    request_row = row(page, SOLD_OUT_SKU)
    expect(request_row.locator(".field-status_badge")).to_have_text("In production")
    expect(request_row.locator(".field-quantity")).to_have_text("10")
    expect(request_row.locator(".field-factory_job_id")).to_have_text(restock.factory_job_id)
    screenshot(page, "admin-restock-requests.png")

    page.locator(".breadcrumbs").get_by_role("link", name="Home").click()
    page.get_by_role("link", name="Outbox events", exact=True).click()
    expect(row(page, "stock.depleted")).to_contain_text(SOLD_OUT_SKU)


def test_admin_index_shows_the_dead_letter_banner(
    aws,
    product,
    admin_page: Page,
    screenshot: Callable[[Page, str], object],
) -> None:
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(
        body=depletion_envelope(sku="CP-502101", factory_id="FF-500293", quantity=10)
    )
    assert watch_dlq(wait=1) == 1
    page = admin_page
    page.reload()
    screenshot(page, "admin-index.png")

    banner = page.locator("#dead-letter-summary")
    expect(banner).to_contain_text("1 dead message in the dead-letter queue.", timeout=1000)
    expect(banner.get_by_role("link", name="Inspect and redrive")).to_have_attribute(
        "href", "/admin/factory_bridge/failedmessage/?status__exact=dead"
    )


def test_staff_inspects_a_dead_message_and_redrives_it(
    live_server,
    aws,
    product,
    admin_page: Page,
    screenshot: Callable[[Page, str], object],
) -> None:
    body = depletion_envelope(sku="CP-502101", factory_id="FF-500293", quantity=10)
    SqsQueue(settings.SQS_RESTOCK_DLQ).send(body=body)
    assert watch_dlq(wait=1) == 1
    failed = FailedMessage.objects.get()
    assert failed.status == FailedMessage.Status.DEAD
    page = admin_page

    page.get_by_role("link", name="Failed messages").click()
    page.locator("#changelist-filter").get_by_role("link", name="Dead (in the DLQ)").click()
    expect(page).to_have_url(
        f"{live_server.url}/admin/factory_bridge/failedmessage/?status__exact=dead"
    )
    message_row = row(page, failed.sqs_message_id[:8])
    expect(message_row.locator(".field-status")).to_have_text("Dead (in the DLQ)")
    expect(message_row.locator(".field-event_type")).to_have_text("stock.depleted")
    expect(message_row.locator(".field-sku")).to_have_text("CP-502101")
    expect(message_row.locator(".field-short_error")).to_have_text("no processing error recorded")
    screenshot(page, "admin-failed-messages.png")

    message_row.get_by_role("link", name=failed.sqs_message_id[:8]).click()
    pretty = page.locator(".field-pretty_body pre")
    expect(pretty).to_contain_text('"Subject": "도너츠 재고 부족"')
    # The SNS Message is unwrapped from its string and indented with the envelope.
    expect(pretty).to_contain_text('"Message": {\n    "event_id"')
    expect(pretty).to_contain_text('    "sku": "CP-502101",')
    screenshot(page, "admin-failed-message-detail.png")

    page.locator(".breadcrumbs").get_by_role("link", name="Failed messages").click()
    row(page, failed.sqs_message_id[:8]).locator("input[name=_selected_action]").check()
    page.locator("select[name=action]").select_option(
        label="Redrive selected messages to the source queue"
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Go", exact=True).click()

    # The cluster runs the job (inline in the tests); the page says it was queued.
    queued = page.locator(".messagelist .info")
    expect(queued).to_contain_text("Redrive of 1 message(s) queued as Redrive job")
    expect(row(page, failed.sqs_message_id[:8]).locator(".field-status")).to_have_text("Redriven")
    screenshot(page, "admin-redrive-done.png")
    queued.get_by_role("link").click()
    expect(page.locator(".field-status .readonly")).to_have_text("Done")
    expect(page.locator(".field-outcome .readonly")).to_have_text(
        "Redriven: 1 moved, 0 failed, 0 not found in the DLQ."
    )

    failed.refresh_from_db()
    assert failed.status == FailedMessage.Status.REDRIVEN
    assert failed.redriven_at is not None
    redriven = SqsQueue(settings.SQS_RESTOCK_QUEUE).receive(wait=1)
    assert [message.body for message in redriven] == [body]
