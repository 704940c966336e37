"""The one order path: every channel (the Sales API, the storefront, `/checkout`) sends its
order through `take_order`, and only translates its input and its answer; both alert
channels send their requests through `take_alert`.

The path: the client (its address key), the rate limit, validation, the customer, then
`place_order` (which holds the purchase limits, exact, under the product's row lock).
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator

from inventory.alerts import subscribe_alert
from inventory.models import Product, Promise, StockAlert
from nudged.core import ratelimits
from shop.exceptions import InvalidOrder
from shop.services import BasketResult, Line, OrderResult, place_basket, place_order

SKU_MAX_LENGTH: int = Product._meta.get_field("sku").max_length  # type: ignore[assignment]  # a CharField's
EMAIL_MAX_LENGTH: int = Promise._meta.get_field("email").max_length  # type: ignore[assignment]  # an EmailField's
# What a form or a JSON client may send for a yes or a no (DRF's spellings).
TRUE = frozenset(("true", "t", "yes", "y", "on", "1"))
FALSE = frozenset(("false", "f", "no", "n", "off", "0", ""))
INTEGER = re.compile(r"[+-]?\d{1,20}(\.0*)?")
REQUIRED = "This field is required."
NULL = "This field may not be null."
BACKORDER_HELP = (
    "Take the units from production when the shelf cannot serve the order: 201 with "
    "`status` `backordered` and `ready_by` instead of 409, when production can."
)
BASKET_HELP = (
    "Several donuts at once, one line per SKU (a SKU twice is refused): every line is served, "
    "or none (409 names each line short). With `backorder`, the lines the shelf cannot serve "
    "wait for their batch."
)
EMAIL_HELP = (
    "Where to say that a pre-order is ready, or cancelled; kept only when the order is one "
    "(`backorder`, shelf short)."
)


@dataclass(frozen=True)
class OrderInput:
    """One donut (`sku`, `quantity`), or a basket of several (`lines`, from `items`)."""

    sku: str = ""
    quantity: int = 0
    backorder: bool = False
    email: str = ""
    lines: tuple[Line, ...] = ()


def take_order(
    *, data: object, channel: str, address: str, customer: Callable[[], str] | None = None
) -> OrderResult | BasketResult:
    """Place the order `data` asks for, from the client at `address` (its key,
    shop.limits.address_key), as the customer `customer` names (the address itself without
    it): called only for an order that passed the rate limit and validation, since naming a
    new storefront customer writes their session. A body with `items` is a basket.

    Raises RateLimited, InvalidOrder, then what place_order and place_basket raise
    (UnknownSku, OutOfStock, BasketShort, PurchaseLimitReached).
    """
    ratelimits.check(scope="order", setting="ORDER_RATE_LIMIT", key=address)
    order = clean_order(data)
    who = customer() if customer else address
    if order.lines:
        return place_basket(
            lines=list(order.lines),
            backorder=order.backorder,
            email=order.email,
            channel=channel,
            customer=who,
            address=address,
        )
    return place_order(
        sku=order.sku,
        quantity=order.quantity,
        backorder=order.backorder,
        email=order.email,
        channel=channel,
        customer=who,
        address=address,
    )


def take_alert(*, sku: str, email: str, address: str) -> StockAlert:
    """Ask for a back-in-stock alert from the client at `address` (its key), within
    ALERT_RATE_LIMIT: RateLimited, then what subscribe_alert raises. Both alert channels (the
    API and the storefront's form) call this."""
    ratelimits.check(scope="alert", setting="ALERT_RATE_LIMIT", key=address)
    return subscribe_alert(sku=sku, email=email)


def clean_order(data: object) -> OrderInput:
    """The order a body (a JSON object or a form's fields) asks for, or InvalidOrder naming
    every bad field. Unknown fields are ignored. A body with `items` is a basket: its lines
    (`items.N.sku`, `items.N.quantity` name their errors) instead of `sku` and `quantity`."""
    if not isinstance(data, Mapping):
        kind = "null" if data is None else type(data).__name__
        raise InvalidOrder({"non_field_errors": [f"Expected an object, got {kind}."]})
    errors: dict[str, list[str]] = {}
    basket = "items" in data
    cleaned = _clean(data, OPTIONS if basket else CLEANERS, errors)
    if basket:
        cleaned["lines"] = _lines(data["items"], errors)
    if errors:
        raise InvalidOrder(errors)
    return OrderInput(**cleaned)


def _clean(
    data: Mapping,
    cleaners: Mapping[str, Callable[[object], object]],
    errors: dict[str, list[str]],
    *,
    prefix: str = "",
) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, clean in cleaners.items():
        try:
            cleaned[name] = clean(data.get(name, _MISSING))
        except DjangoValidationError as exc:
            errors[f"{prefix}{name}"] = exc.messages
    return cleaned


def _lines(items: object, errors: dict[str, list[str]]) -> tuple[Line, ...]:
    """A basket's lines: a list of 1 to ORDER_MAX_LINES {sku, quantity}, one per SKU."""
    most = settings.ORDER_MAX_LINES
    if not isinstance(items, list) or not 1 <= len(items) <= most:
        errors["items"] = [f"Expected a list of 1 to {most} items, each {{sku, quantity}}."]
        return ()
    lines: list[Line] = []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors[f"items.{n}"] = ["Expected an object {sku, quantity}."]
            continue
        fields = _clean(item, LINE_CLEANERS, errors, prefix=f"items.{n}.")
        if len(fields) == len(LINE_CLEANERS):
            lines.append(Line(**fields))
    skus = [line.sku.casefold() for line in lines]
    if len(set(skus)) < len(skus):
        errors["items"] = ["One line per donut: a SKU appears twice."]
    return tuple(lines)


_MISSING = object()


def _sku(value: object) -> str:
    if value is _MISSING:
        raise DjangoValidationError(REQUIRED)
    if value is None:
        raise DjangoValidationError(NULL)
    if not isinstance(value, str):
        raise DjangoValidationError("Not a valid string.")
    sku = value.strip()
    if not sku:
        raise DjangoValidationError("This field may not be blank.")
    if len(sku) > SKU_MAX_LENGTH:
        raise DjangoValidationError(
            f"Ensure this field has no more than {SKU_MAX_LENGTH} characters."
        )
    if "\x00" in sku:
        raise DjangoValidationError("Null characters are not allowed.")
    return sku


def _quantity(value: object) -> int:
    if value is _MISSING:
        raise DjangoValidationError(REQUIRED)
    if value is None:
        raise DjangoValidationError(NULL)
    if type(value) is int:
        quantity = value
    elif isinstance(value, float) and value.is_integer():
        quantity = int(value)
    elif isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        quantity = int(value.strip().partition(".")[0])
    else:
        raise DjangoValidationError("A valid integer is required.")
    if quantity < 1:
        raise DjangoValidationError("Ensure this value is greater than or equal to 1.")
    if quantity > settings.ORDER_MAX_QUANTITY:
        raise DjangoValidationError(
            f"Ensure this value is less than or equal to {settings.ORDER_MAX_QUANTITY}."
        )
    return quantity


def _backorder(value: object) -> bool:
    if value is _MISSING:
        return False
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
    if value is None:
        raise DjangoValidationError(NULL)
    raise DjangoValidationError("Must be a valid boolean.")


_email_validator = EmailValidator()


def _email(value: object) -> str:
    if value is _MISSING or value == "":
        return ""
    if value is None:
        raise DjangoValidationError(NULL)
    if not isinstance(value, str):
        raise DjangoValidationError("Not a valid string.")
    email = value.strip()
    if len(email) > EMAIL_MAX_LENGTH:
        raise DjangoValidationError(
            f"Ensure this field has no more than {EMAIL_MAX_LENGTH} characters."
        )
    _email_validator(email)
    return email


LINE_CLEANERS = {"sku": _sku, "quantity": _quantity}
OPTIONS = {"backorder": _backorder, "email": _email}
CLEANERS = {**LINE_CLEANERS, **OPTIONS}


def order_input_schema() -> dict[str, Any]:
    """The JSON schema of an order body, from the bounds clean_order applies (the OpenAPI
    schema's request body): one donut, or a basket of several (`items`)."""
    sku = {
        "type": "string",
        "minLength": 1,
        "maxLength": SKU_MAX_LENGTH,
        "pattern": r"\S",
        "description": "Surrounding spaces are trimmed.",
    }
    quantity = {"type": "integer", "minimum": 1, "maximum": settings.ORDER_MAX_QUANTITY}
    options = {
        "backorder": {"type": "boolean", "default": False, "description": BACKORDER_HELP},
        "email": {
            "type": "string",
            "format": "email",
            "maxLength": EMAIL_MAX_LENGTH,
            "description": EMAIL_HELP,
        },
    }
    line = {
        "type": "object",
        "properties": {"sku": sku, "quantity": quantity},
        "required": ["sku", "quantity"],
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "title": "One donut",
                "properties": {"sku": sku, "quantity": quantity, **options},
                "required": ["sku", "quantity"],
                "not": {"required": ["items"]},
            },
            {
                "type": "object",
                "title": "A basket",
                "properties": {
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": settings.ORDER_MAX_LINES,
                        "items": line,
                        "description": BASKET_HELP,
                    },
                    **options,
                },
                "required": ["items"],
            },
        ]
    }
