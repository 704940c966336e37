"""Storefront pages: a catalog with an order form, and a basket, that work without JavaScript."""

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

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
from shop.baskets import (
    BasketLine,
    basket_add,
    basket_clear,
    basket_get,
    basket_note_short,
    basket_pop_short,
    basket_remove,
    basket_set,
    basket_units,
)
from shop.exceptions import BasketShort, UnknownOrder
from shop.limits import address_key, browser_customer, describe_window
from shop.models import Basket, Order
from shop.orders import EMAIL_MAX_LENGTH, SKU_MAX_LENGTH, take_alert, take_order
from shop.selectors import receipt_get
from shop.wording import REFUSALS, refusal


class AlertForm(forms.Form):
    sku = forms.CharField(max_length=SKU_MAX_LENGTH)
    email = forms.EmailField(max_length=254)


class AddForm(forms.Form):
    """A storefront card's donut for the basket (shop.baskets.basket_add checks its bounds)."""

    sku = forms.CharField(max_length=SKU_MAX_LENGTH, label="Donut")
    quantity = forms.IntegerField(min_value=1, label="Quantity")


class BasketForm(forms.Form):
    """The basket page's form: a quantity for each line (0 takes it out), and the order's
    options."""

    backorder = forms.BooleanField(
        required=False, label="If a donut runs short, take it from the next batch (pre-order)"
    )
    email = forms.EmailField(
        required=False, max_length=EMAIL_MAX_LENGTH, label="Email for the ready notice (optional)"
    )

    def __init__(self, *args: Any, lines: Iterable[BasketLine], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skus: dict[str, str] = {}
        for line in lines:
            name = self.field(line.product.sku)
            self.skus[name] = line.product.sku
            # Not required: a line added since the page was drawn keeps its quantity.
            self.fields[name] = forms.IntegerField(
                required=False,
                min_value=0,
                max_value=settings.ORDER_MAX_QUANTITY,
                initial=line.quantity,
                label=f"Quantity of {line.product.name}",
            )

    @staticmethod
    def field(sku: str) -> str:
        return f"quantity-{sku}"

    def quantities(self) -> dict[str, int]:
        """The quantity of each line sent, by SKU (call after is_valid)."""
        quantities = {sku: self.cleaned_data[name] for name, sku in self.skus.items()}
        return {sku: quantity for sku, quantity in quantities.items() if quantity is not None}

    def options(self) -> dict[str, Any]:
        """The order's options, as an order body names them (call after is_valid)."""
        return {"backorder": self.cleaned_data["backorder"], "email": self.cleaned_data["email"]}


def storefront(request: HttpRequest) -> HttpResponse:
    context = {
        "products": product_list(),
        "basket_units": basket_units(request.session),
        "purchase_limit": settings.PURCHASE_LIMIT,
        "purchase_window": describe_window(settings.PURCHASE_LIMIT_WINDOW),
    }
    return render(request, "shop/storefront.html", context)


@require_POST
def order(request: HttpRequest) -> HttpResponse:
    try:
        result = take_order(
            data=request.POST,
            channel=Order.Channel.WEB,
            address=address_key(request),
            customer=lambda: browser_customer(request),
        )
    except REFUSALS as refused:
        for text in refusal(refused):
            messages.error(request, text)
    else:
        return redirect("shop:receipt", reference=result.reference)
    return redirect("shop:storefront")


@require_http_methods(["GET", "POST"])
def basket(request: HttpRequest) -> HttpResponse:
    """GET shows the basket; a POST (its Update button) sets its quantities."""
    current = basket_get(request.session)
    if request.method == "POST":
        form = BasketForm(request.POST, lines=current.lines)
        if form.is_valid():
            basket_set(request.session, quantities=form.quantities())
            messages.success(request, "Your basket is updated.")
        else:
            messages.error(request, f"Your basket could not be updated ({_errors(form)}).")
        return redirect("shop:basket")
    form = BasketForm(lines=current.lines)
    short = basket_pop_short(request.session)
    rows = [
        {
            "line": line,
            "quantity": form[BasketForm.field(line.product.sku)],
            "short": short.get(line.product.sku.casefold()),
        }
        for line in current.lines
    ]
    context = {"basket": current, "rows": rows, "form": form, "basket_units": current.units}
    return render(request, "shop/basket.html", context)


@require_POST
def add_to_basket(request: HttpRequest) -> HttpResponse:
    form = AddForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"We could not add that to your basket ({_errors(form)}).")
        return redirect("shop:storefront")
    try:
        line = basket_add(request.session, **form.cleaned_data)
    except REFUSALS as refused:
        for text in refusal(refused):
            messages.error(request, text)
    else:
        messages.success(request, f"Your basket has {line.quantity} × {line.product.name}.")
    return redirect("shop:storefront")


@require_POST
def remove_from_basket(request: HttpRequest) -> HttpResponse:
    sku = request.POST.get("sku", "")
    basket_remove(request.session, sku=sku)
    return redirect("shop:basket")


@require_POST
def order_basket(request: HttpRequest) -> HttpResponse:
    """Order the basket as the page shows it (its quantities as the form sends them): all of
    it, or, refused, nothing, the basket kept and its short lines marked."""
    form = BasketForm(request.POST, lines=basket_get(request.session).lines)
    if not form.is_valid():
        messages.error(request, f"Your basket could not be ordered ({_errors(form)}).")
        return redirect("shop:basket")
    basket_set(request.session, quantities=form.quantities())
    items = basket_get(request.session).items()
    if not items:
        messages.error(request, "Your basket is empty: add donuts to it first.")
        return redirect("shop:storefront")
    try:
        result = take_order(
            data={"items": items, **form.options()},
            channel=Order.Channel.WEB,
            address=address_key(request),
            customer=lambda: browser_customer(request),
        )
    except REFUSALS as refused:
        if isinstance(refused, BasketShort):
            basket_note_short(request.session, lines=refused.lines)
        for text in refusal(refused):
            messages.error(request, text)
        return redirect("shop:basket")
    basket_clear(request.session)
    return redirect("shop:receipt", reference=result.reference)


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
