"""A Content-Security-Policy on every page: nothing inline runs, nothing loads from elsewhere."""

import re

import pytest
from django.urls import reverse

from shop.models import Order

pytestmark = pytest.mark.django_db

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def directives(header: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_every_kind_of_page_carries_the_policy(admin_client, client, product, no_events):
    client.post("/order/", {"sku": product.sku, "quantity": 1})
    pages = {
        "storefront": client.get("/"),
        "receipt": client.get(f"/orders/{Order.objects.get().reference}/"),
        "api": client.get("/api/products/"),
        "api docs": client.get("/api/docs/"),
        "not found": client.get("/no/such/page/"),
        "admin login": client.get("/admin/login/"),
        "admin": admin_client.get(reverse("admin:index")),
        "dashboard": admin_client.get("/admin/dashboard/"),
    }

    for name, response in pages.items():
        assert directives(response["Content-Security-Policy"]) == directives(POLICY), name


def test_no_page_has_inline_code(admin_client, client, product, no_events):
    """What the policy would block: inline scripts, inline styles, style attributes."""
    client.post("/order/", {"sku": product.sku, "quantity": 1})
    pages = [
        client.get("/"),
        client.get(f"/orders/{Order.objects.get().reference}/"),
        client.get("/api/docs/"),
        admin_client.get(reverse("admin:index")),
        admin_client.get("/admin/dashboard/"),
        admin_client.get(reverse("admin:inventory_product_changelist")),
        admin_client.get(reverse("admin:factory_bridge_restockrequest_changelist")),
    ]

    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), response.request["PATH_INFO"]
        assert "<style" not in html, response.request["PATH_INFO"]
        assert not re.search(r"\sstyle=", html), response.request["PATH_INFO"]


def test_swagger_ui_starts_from_a_script_of_this_site(client):
    page = client.get("/api/docs/").content.decode()
    [script] = re.findall(r'<script src="(/api/docs/\?[^"]*script[^"]*)"', page)

    answer = client.get(script.replace("&amp;", "&"))

    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in answer.content.decode()
