"""Who a customer is: the keys that orders, purchase limits and rate limits count by."""

from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from nudged.core.clients import client_address

KEY_SALT = "shop.limits.customer"


def browser_customer(request: HttpRequest) -> str:
    """A storefront customer is their session (created here if they have none yet)."""
    if not request.session.session_key:
        request.session.save()
    return _keyed(f"session:{request.session.session_key}")


def address_key(request: HttpRequest) -> str:
    """The client's address (nudged.core.clients) as orders and rate limits record it.

    An API or /checkout client is nothing but its address, so this is its customer too.
    """
    return _keyed(f"address:{client_address(request)}")


def _keyed(identity: str) -> str:
    # Stored on orders and used as a cache key: no session key or address in the clear, and
    # keyed with the secret so that nobody can hash every IPv4 address to find one.
    return salted_hmac(KEY_SALT, identity, algorithm="sha256").hexdigest()[:32]


def describe_window(seconds: int) -> str:
    """'hour', '10 minutes', '90 seconds': a purchase-limit window in words."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
