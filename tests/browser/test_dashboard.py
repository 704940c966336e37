"""The staff dashboard in a real browser: from the admin index to the charts of a rush."""

import random
import re
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Page, expect

from factory_bridge.models import FailedMessage, RestockRequest
from inventory import events
from inventory.models import Factory, Product, StockAdjustment
from nudged.core.models import OutboxEvent
from shop.models import Order

pytestmark = pytest.mark.browser

PASSWORD = "sprinkles-on-top-77"


def ago(minutes: float) -> datetime:
    return timezone.now() - timedelta(minutes=minutes)


def sell(product: Product, stock: int, minutes_ago: float) -> int:
    """One order of one unit, `minutes_ago`, published a moment later; the stock it left."""
    order = Order.objects.create(
        product=product,
        quantity=1,
        status=Order.Status.COMPLETED,
        unit_price=product.price,
        remaining_stock=stock - 1,
    )
    when = ago(minutes_ago)
    lag = timedelta(seconds=0.3 + random.random() * (4 if 22 < minutes_ago < 30 else 0.8))
    Order.objects.filter(pk=order.pk).update(created_at=when, published_at=when + lag)
    return stock - 1


def arrive(product: Product, old: int, added: int, minutes_ago: float, lead: float) -> int:
    adjustment = StockAdjustment.objects.create(
        product=product, reason="arrival", old_quantity=old, new_quantity=old + added
    )
    StockAdjustment.objects.filter(pk=adjustment.pk).update(created_at=ago(minutes_ago))
    RestockRequest.objects.create(
        product=product,
        factory=product.factory,
        quantity=added,
        status="fulfilled",
        depletion_key=f"{product.sku}-{minutes_ago}",
        fulfilled_at=ago(minutes_ago),
    )
    RestockRequest.objects.filter(depletion_key=f"{product.sku}-{minutes_ago}").update(
        created_at=ago(minutes_ago) - timedelta(seconds=lead)
    )
    return old + added


def refused(product: Product, count: int, limited: int, minutes_ago: float) -> None:
    event = OutboxEvent.objects.create(
        topic="sales",
        event_type=events.ORDERS_REFUSED,
        body={"refused_orders": count, "refused_units": count, "limited_orders": limited},
        attributes={},
        sku=product.sku,
    )
    OutboxEvent.objects.filter(pk=event.pk).update(
        created_at=ago(minutes_ago), published_at=ago(minutes_ago) + timedelta(seconds=0.5)
    )


@pytest.fixture
def rush(product: Product) -> list[Product]:
    """An hour with a rush on 부산도너츠: sold out for a while, refused, restocked."""
    random.seed(14)
    seoul = Factory.objects.create(
        code="FF-500294", name="노티드 서울 공장", manager_email="s@n.kr"
    )
    cream = Product.objects.create(
        sku="CP-502102", name="우유 생크림 도넛", price=3800, stock=9, factory=seoul
    )
    earl = Product.objects.create(
        sku="CP-502103", name="얼그레이 도넛", price=4200, stock=5, factory=seoul
    )
    busan = product
    stock = {busan.pk: 30, cream.pk: 24, earl.pk: 12}
    Product.objects.filter(pk=busan.pk).update(stock=30)
    for minute in range(58, 0, -1):
        rush = 22 <= minute <= 36
        for _ in range(random.randint(3, 7) if rush else random.randint(0, 1)):
            if stock[busan.pk] > 0:
                stock[busan.pk] = sell(busan, stock[busan.pk], minute + random.random())
        if stock[busan.pk] == 0 and rush:
            refused(busan, random.randint(4, 9), random.randint(0, 2), minute)
        if random.random() < 0.6 and stock[cream.pk] > 0:
            stock[cream.pk] = sell(cream, stock[cream.pk], minute + random.random())
        if random.random() < 0.25 and stock[earl.pk] > 0:
            stock[earl.pk] = sell(earl, stock[earl.pk], minute + random.random())
        if minute == 21:
            stock[busan.pk] = arrive(busan, stock[busan.pk], 40, minute, lead=52.5)
        if minute == 16 and stock[cream.pk] < 10:
            stock[cream.pk] = arrive(cream, stock[cream.pk], 20, minute, lead=41.0)
        if minute in (44, 8):
            stock[earl.pk] = arrive(earl, stock[earl.pk], 10, minute, lead=38.0 + minute / 4)
    for pk, units in stock.items():
        Product.objects.filter(pk=pk).update(stock=units)
    FailedMessage.objects.create(
        fingerprint="a",
        dlq=settings.SQS_RESTOCK_DLQ,
        body="{}",
        first_seen_at=ago(27),
        status="redriven",
        redriven_at=ago(12),
    )
    FailedMessage.objects.create(
        fingerprint="b",
        dlq=settings.SQS_RESTOCK_DLQ,
        body="{}",
        first_seen_at=ago(24),
    )
    FailedMessage.objects.create(
        fingerprint="c",
        dlq=settings.SQS_NOTIFY_DLQ,
        body="{}",
        first_seen_at=ago(9),
    )
    return [busan, cream, earl]


def test_staff_open_the_dashboard_from_the_admin_and_switch_to_the_day(
    live_server, django_user_model, rush, page: Page, screenshot
):
    staff = django_user_model.objects.create_superuser(
        username="manager", email="ops@nudged.kr", password=PASSWORD
    )
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()

    page.get_by_role("link", name="Dashboard").click()

    expect(page).to_have_url(f"{live_server.url}/admin/dashboard/")
    expect(page.get_by_role("link", name="Last hour")).to_have_attribute("aria-current", "page")
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(6)
    for title in (
        "Orders served and refused",
        "Stock per product",
        "Sold-out periods",
        "Restock lead times",
        "Outbox relay lag",
        "Dead-letter queue depth",
    ):
        expect(page.get_by_role("heading", name=title)).to_be_visible()
    orders = page.locator("#panel-orders")
    expect(orders.locator(".dashboard-legend")).to_contain_text("refused: out of stock")
    expect(orders.locator("svg path[stroke]").first).to_have_attribute("d", re.compile(r"^M[^M]+L"))
    # 부산도너츠 ran out in the rush: one bar in its sold-out lane, ended by the arrival.
    busan = page.locator("#panel-sold-out svg rect", has_text="CP-502101 sold out")
    expect(busan).to_have_count(1)
    expect(page.locator("#panel-restocks svg circle")).to_have_count(4)
    expect(page.locator("#panel-stock .dashboard-legend")).to_contain_text(
        "CP-502103 얼그레이 도넛"
    )
    screenshot(page, "admin-dashboard.png")

    page.get_by_role("link", name="Last day").click()

    expect(page).to_have_url(f"{live_server.url}/admin/dashboard/?window=day")
    expect(page.get_by_role("link", name="Last day")).to_have_attribute("aria-current", "page")
    expect(charts).to_have_count(6)
    expect(page.locator("#panel-orders")).to_contain_text("5-minute average")
    expect(page.locator("#panel-restocks svg circle")).to_have_count(4)
