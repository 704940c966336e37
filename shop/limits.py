"""Who a customer is, and how often they may order: rate limits for every order channel."""

import hashlib

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle


def browser_customer(request: HttpRequest) -> str:
    """A storefront customer is their session (created here if they have none yet)."""
    if not request.session.session_key:
        request.session.save()
    return _hashed(f"session:{request.session.session_key}")


def api_customer(request: HttpRequest) -> str:
    """An API client is its address; behind NUM_PROXIES proxies, from X-Forwarded-For."""
    return _hashed(f"address:{OrderRateThrottle().get_ident(request)}")


def _hashed(identity: str) -> str:
    # Stored on orders and used as a cache key: no session key or address in the clear.
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


class OrderRateThrottle(SimpleRateThrottle):
    """ORDER_RATE_LIMIT order requests per customer, counted in the shared cache."""

    scope = "orders"

    def get_rate(self) -> str | None:
        return None if self.off() else settings.ORDER_RATE_LIMIT.strip().lower()

    @staticmethod
    def off() -> bool:
        """Whether ORDER_RATE_LIMIT is off: nothing to count."""
        return settings.ORDER_RATE_LIMIT.strip().lower() in ("", "off", "0")

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        customer = getattr(request, "customer", None) or api_customer(request)
        return self.cache_format % {"scope": self.scope, "ident": customer}


class AlertRateThrottle(SimpleRateThrottle):
    """ALERT_RATE_LIMIT alert requests per client address, on the storefront and the API.

    Counted per address, not per session: a new session is free, a new address is not.
    """

    scope = "alerts"

    def get_rate(self) -> str | None:
        rate = settings.ALERT_RATE_LIMIT.strip().lower()
        return None if rate in ("", "off", "0") else rate

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": api_customer(request)}


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
