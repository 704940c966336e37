"""Who a customer is, and how often they may order: rate limits for every order channel."""

from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from rest_framework.throttling import SimpleRateThrottle

from nudged.clients import client_address

KEY_SALT = "shop.limits.customer"


def browser_customer(request: HttpRequest) -> str:
    """A storefront customer is their session (created here if they have none yet)."""
    if not request.session.session_key:
        request.session.save()
    return _keyed(f"session:{request.session.session_key}")


def address_key(request: HttpRequest) -> str:
    """The client's address (nudged.clients) as orders and rate limits record it.

    An API or /checkout client is nothing but its address, so this is its customer too.
    """
    return _keyed(f"address:{client_address(request)}")


def _keyed(identity: str) -> str:
    # Stored on orders and used as a cache key: no session key or address in the clear, and
    # keyed with the secret so that nobody can hash every IPv4 address to find one.
    return salted_hmac(KEY_SALT, identity, algorithm="sha256").hexdigest()[:32]


class OrderRateThrottle(SimpleRateThrottle):
    """ORDER_RATE_LIMIT order requests per client address, counted in the shared cache.

    Per address on every channel, the storefront's included: a session is only a cookie,
    and a client that drops it would start a new count with every order.
    """

    scope = "orders"

    def get_rate(self) -> str | None:
        return None if self.off() else settings.ORDER_RATE_LIMIT.strip().lower()

    @staticmethod
    def off() -> bool:
        """Whether ORDER_RATE_LIMIT is off: nothing to count."""
        return settings.ORDER_RATE_LIMIT.strip().lower() in ("", "off", "0")

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": address_key(request)}


class AlertRateThrottle(SimpleRateThrottle):
    """ALERT_RATE_LIMIT alert requests per client address, on the storefront and the API.

    Counted per address, not per session: a new session is free, a new address is not.
    """

    scope = "alerts"

    def get_rate(self) -> str | None:
        rate = settings.ALERT_RATE_LIMIT.strip().lower()
        return None if rate in ("", "off", "0") else rate

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": address_key(request)}


def throttled(
    request: HttpRequest, throttle_class: type[SimpleRateThrottle] = OrderRateThrottle
) -> float | None:
    """Seconds to wait when this request is over the rate limit, else None (views without DRF)."""
    throttle = throttle_class()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0


def describe_window(seconds: int) -> str:
    """'hour', '10 minutes', '90 seconds': a purchase-limit window in words."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
