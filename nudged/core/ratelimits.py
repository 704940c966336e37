"""Rate limits: requests per key and window, counted in the limit store that every web process
and host shares (Redis, CACHE_URL), one round trip per check.

A store that fails lets requests through (fail open): a rate limit protects the shop from
one client's flood, and an outage of its counter must not refuse every customer. Each such
request is logged (at most once per LOG_EVERY_SECONDS per process) and counted in /metrics
(`nudged_rate_limit_unchecked_total`). Purchase limits are not counted here: they are exact,
in the statements the order already runs (shop.services).
"""

import contextlib
import logging
import time
from functools import cache

from django.conf import settings
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import Counter
from redis.exceptions import RedisError

from nudged.core.exceptions import DomainError

logger = logging.getLogger(__name__)

# Seconds a process lets requests through unchecked after its store failed, before it asks
# the store again: a store that is down costs one failed call per process per interval, not
# one per request.
RETRY_SECONDS = 5.0
LOG_EVERY_SECONDS = 60.0
# Seconds the store may take to connect or to answer: a rate limit is never worth more.
STORE_TIMEOUT = 0.25
# DRF's rate syntax, kept for the settings: "20/s", "300/m", "10/h", "1000/d".
PERIODS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
OFF = ("", "off", "0")

UNCHECKED = Counter(
    "nudged_rate_limit_unchecked",
    "Requests let through without a rate-limit check because the limit store failed",
    ["scope"],
)


class RateLimited(DomainError):
    code = "throttled"
    status = 429

    def __init__(self, *, scope: str, setting: str, wait: int) -> None:
        super().__init__(
            f"Too many {scope} requests from this client address ({setting}); "
            f"try again in {wait} s."
        )
        self.scope = scope
        self.wait = wait

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.wait)}


def rate(setting: str) -> RateLimitItem | None:
    """The rate a setting names ("20/s"), or None when it is off."""
    return _parse(getattr(settings, setting).strip().lower())


@cache
def _parse(text: str) -> RateLimitItem | None:
    if text in OFF:
        return None
    count, _, period = text.partition("/")
    return parse(f"{count} per {PERIODS.get(period[:1], period)}")


def check(*, scope: str, setting: str, key: str) -> None:
    """Count one request of `key` against the rate `setting` names; RateLimited when over it.

    `scope` names the kind of request ("order", "alert") and keeps their counts apart.
    """
    item = rate(setting)
    if item is None:
        return
    store = _store(settings.CACHE_URL)
    if store.resting():
        UNCHECKED.labels(scope).inc()
        return
    try:
        if store.limiter.hit(item, scope, key):
            return
        reset = store.limiter.get_window_stats(item, scope, key).reset_time
    except StorageError as exc:
        store.failed(scope=scope, error=exc.storage_error)
        return
    except RedisError as exc:  # connecting, as the client is made
        store.failed(scope=scope, error=exc)
        return
    raise RateLimited(scope=scope, setting=setting, wait=max(1, int(reset - time.time() + 0.999)))


def clear() -> None:
    """Forget every count, and every store this process opened (tests)."""
    for url in list(_stores):
        opened = _stores.pop(url).opened
        if opened is not None:
            with contextlib.suppress(StorageError):
                opened.storage.reset()


_stores: dict[str, "_Store"] = {}


def _storage(url: str) -> Storage:
    if url.startswith(("redis://", "rediss://", "redis+unix://")):
        return storage_from_string(  # type: ignore[return-value]  # no async+ scheme
            url,
            wrap_exceptions=True,
            socket_timeout=STORE_TIMEOUT,
            socket_connect_timeout=STORE_TIMEOUT,
            # One connection per process, held: a web worker checks one request at a time,
            # and taking a connection from a pool costs a fifth of a check's CPU.
            single_connection_client=True,
        )
    # A single process (tests, a one-process run): counts that no other process sees.
    return storage_from_string("memory://")  # type: ignore[return-value]  # no async+ scheme


def _store(url: str) -> "_Store":
    if url not in _stores:
        _stores[url] = _Store(url)
    return _stores[url]


class _Store:
    """The limit store of CACHE_URL: Redis when it names Redis, else this process's memory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: FixedWindowRateLimiter | None = None
        self.down_until = 0.0
        self.logged_at = -LOG_EVERY_SECONDS

    @property
    def limiter(self) -> FixedWindowRateLimiter:
        """Opened by the first check: a Redis client connects as it is made, and a store that
        is down must fail that check, not the request."""
        if self.opened is None:
            self.opened = FixedWindowRateLimiter(_storage(self.url))
        return self.opened

    def resting(self) -> bool:
        return time.monotonic() < self.down_until

    def failed(self, *, scope: str, error: Exception) -> None:
        now = time.monotonic()
        self.down_until = now + RETRY_SECONDS
        UNCHECKED.labels(scope).inc()
        if now - self.logged_at >= LOG_EVERY_SECONDS:
            self.logged_at = now
            logger.error(
                "rate limits unchecked for %.0f s: the limit store failed: %s",
                RETRY_SECONDS,
                error,
            )
