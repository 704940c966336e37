"""Storefront pages: a catalog with an order form that works without JavaScript."""

from http import HTTPStatus

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from inventory.alerts import (
    alert_from_confirm_token,
    alert_from_unsubscribe_token,
    confirm_alert,
    unsubscribe_alert,
)
from inventory.exceptions import InventoryError
from inventory.selectors import product_list
from nudged.core.ratelimits import RateLimited
from shop.exceptions import InvalidOrder, OutOfStock, PurchaseLimitReached, UnknownOrder
from shop.limits import address_key, browser_customer, describe_window
from shop.models import Basket, Order
from shop.orders import SKU_MAX_LENGTH, take_alert, take_order
from shop.selectors import receipt_get


class AlertForm(forms.Form):
    sku = forms.CharField(max_length=SKU_MAX_LENGTH)
    email = forms.EmailField(max_length=254)


def storefront(request: HttpRequest) -> HttpResponse:
    context = {
        "products": product_list(),
        "purchase_limit": settings.PURCHASE_LIMIT,
        "purchase_window": describe_window(settings.PURCHASE_LIMIT_WINDOW),
    }
    return render(request, "shop/storefront.html", context)


# The form's fields by the label the storefront shows.
LABELS = {"sku": "Donut", "quantity": "Quantity", "email": "Email", "backorder": "Pre-order"}


@require_POST
def order(request: HttpRequest) -> HttpResponse:
    try:
        result = take_order(
            data=request.POST,
            channel=Order.Channel.WEB,
            address=address_key(request),
            customer=lambda: browser_customer(request),
        )
    except RateLimited as limited:
        messages.error(request, f"Too many orders at once; try again in {limited.wait} s.")
    except InvalidOrder as invalid:
        problems = "; ".join(
            f"{LABELS.get(name, name)}: {' '.join(texts)}" for name, texts in invalid.errors.items()
        )
        messages.error(request, f"Your order could not be placed. {problems}")
    except OutOfStock as refused:
        if refused.available:
            text = (
                f"Sorry, only {refused.available} {refused.name} left; "
                f"you asked for {refused.requested}."
            )
        else:
            text = f"Sorry, {refused.name} is sold out."
        messages.error(request, text)
    except PurchaseLimitReached as limited:
        if limited.scope == PurchaseLimitReached.CUSTOMER:
            text = (
                f"Sorry, one customer may buy {limited.limit} × {limited.name} at most "
                f"(you have {limited.bought})."
            )
        else:
            text = (
                f"Sorry, orders from one address may buy {limited.limit} × {limited.name} "
                f"per {describe_window(limited.window)} at most ({limited.bought} bought "
                "from yours)."
            )
        messages.error(request, text)
    except InventoryError as exc:
        messages.error(request, exc.detail)
    else:
        return redirect("shop:receipt", reference=result.reference)
    return redirect("shop:storefront")


def receipt(request: HttpRequest, reference: str) -> HttpResponse:
    try:
        placed = receipt_get(reference=reference)
    except UnknownOrder as unknown:
        raise Http404(unknown.detail) from unknown
    if isinstance(placed, Basket):
        return render(request, "shop/basket_receipt.html", {"basket": placed})
    return render(request, "shop/receipt.html", {"order": placed})


@require_POST
def alert(request: HttpRequest) -> HttpResponse:
    form = AlertForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"We could not take your alert ({_errors(form)}).")
        return redirect("shop:storefront")
    try:
        created = take_alert(**form.cleaned_data, address=address_key(request))
    except RateLimited as limited:
        messages.error(request, f"Too many alert requests; try again in {limited.wait} s.")
    except InventoryError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"Almost done: follow the link we email to {form.cleaned_data['email']}, and we "
            f"will write once when {created.product.name} is back.",
        )
    return redirect("shop:storefront")


@require_http_methods(["GET", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows what the link confirms and a button; only its POST confirms.

    Mail scanners follow links: a GET that confirmed would opt in whoever was signed up.
    """
    try:
        if request.method == "GET":
            pending = alert_from_confirm_token(token=token)
            return _link_page(
                request,
                heading="Confirm your alert",
                text=f"Email {pending.email} once when {pending.product.name} is back in stock?",
                action="Confirm",
            )
        confirmed = confirm_alert(token=token)
    except InventoryError as exc:
        messages.error(request, exc.detail)
        return redirect("shop:storefront")
    name = confirmed.product.name
    if confirmed.waiting:
        messages.success(
            request, f"Confirmed: we will email {confirmed.email} once when {name} is back."
        )
    else:
        messages.success(request, f"{name} is back in stock already: order it below.")
    return redirect("shop:storefront")


# The token is the proof: RFC 8058 one-click POSTs come from mail clients without a cookie.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a page whose button POSTs; a POST (the button, or one click) unsubscribes."""
    try:
        if request.method == "GET":
            named = alert_from_unsubscribe_token(token=token)
            return _link_page(
                request,
                heading="Unsubscribe",
                text=f"Send {named.email} no more email from Nudged, back-in-stock alerts "
                "included?",
                action="Unsubscribe",
            )
        ended = unsubscribe_alert(token=token)
    except InventoryError as exc:
        return _link_page(
            request, heading="Unsubscribe", text=exc.detail, status=HTTPStatus.NOT_FOUND
        )
    return _link_page(
        request, heading="Unsubscribed", text=f"{ended.email} will get no more email from Nudged."
    )


def _link_page(
    request: HttpRequest,
    *,
    heading: str,
    text: str,
    action: str = "",
    status: int = HTTPStatus.OK,
) -> HttpResponse:
    context = {"heading": heading, "text": text, "action": action}
    return render(request, "shop/alert_link.html", context, status=status)


def _errors(form: forms.Form) -> str:
    """A form's errors on one line: each field by its label, then what is wrong with it."""
    return "; ".join(
        " ".join(problems)  # type: ignore[arg-type]  # an ErrorList yields its messages, str
        if name == NON_FIELD_ERRORS
        else f"{form[name].label}: {' '.join(problems)}"  # type: ignore[arg-type]  # as above
        for name, problems in form.errors.items()
    )
