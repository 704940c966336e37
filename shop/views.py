"""Storefront pages: a catalog with an order form that works without JavaScript."""

from math import ceil

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from inventory.alerts import subscribe_alert, unsubscribe_alert
from inventory.exceptions import InventoryError
from inventory.selectors import product_list
from shop.exceptions import OutOfStock, PurchaseLimitReached, UnknownOrder
from shop.limits import address_key, browser_customer, describe_window, throttled
from shop.models import Order
from shop.selectors import order_get
from shop.services import place_order


class OrderForm(forms.Form):
    sku = forms.CharField(max_length=32, label="Donut")
    quantity = forms.IntegerField(
        min_value=1, max_value=settings.ORDER_MAX_QUANTITY, initial=1, label="Quantity"
    )


class AlertForm(forms.Form):
    sku = forms.CharField(max_length=32)
    email = forms.EmailField(max_length=254)


def storefront(request: HttpRequest) -> HttpResponse:
    context = {
        "products": product_list(),
        "purchase_limit": settings.PURCHASE_LIMIT,
        "purchase_window": describe_window(settings.PURCHASE_LIMIT_WINDOW),
    }
    return render(request, "shop/storefront.html", context)


@require_POST
def order(request: HttpRequest) -> HttpResponse:
    form = OrderForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Your order could not be placed. {_errors(form)}")
        return redirect("shop:storefront")
    wait = throttled(request)
    if wait is not None:
        messages.error(request, f"Too many orders at once; try again in {ceil(wait)} s.")
        return redirect("shop:storefront")
    try:
        result = place_order(
            **form.cleaned_data,
            channel=Order.Channel.WEB,
            customer=browser_customer(request),
            address=address_key(request),
        )
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
        return redirect("shop:receipt", reference=result.order.reference)
    return redirect("shop:storefront")


def receipt(request: HttpRequest, reference: str) -> HttpResponse:
    try:
        placed = order_get(reference=reference)
    except UnknownOrder as unknown:
        raise Http404(unknown.detail) from unknown
    return render(request, "shop/receipt.html", {"order": placed})


@require_POST
def alert(request: HttpRequest) -> HttpResponse:
    form = AlertForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"We could not take your alert ({_errors(form)}).")
        return redirect("shop:storefront")
    try:
        created = subscribe_alert(**form.cleaned_data)
    except InventoryError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"We will email {created.email} once when {created.product.name} is back.",
        )
    return redirect("shop:storefront")


def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    ended = unsubscribe_alert(token=token)
    if ended is None:
        messages.error(request, "That unsubscribe link is not valid.")
    else:
        messages.success(request, f"{ended.email} will get no more back-in-stock emails.")
    return redirect("shop:storefront")


def _errors(form: forms.Form) -> str:
    """A form's errors on one line: each field by its label, then what is wrong with it."""
    return "; ".join(
        " ".join(problems)
        if name == NON_FIELD_ERRORS
        else f"{form[name].label}: {' '.join(problems)}"
        for name, problems in form.errors.items()
    )
