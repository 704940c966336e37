"""Browser tests: Chromium drives the storefront and the admin over real HTTP."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DESKTOP = {"width": 1280, "height": 900}
MOBILE = {"width": 390, "height": 844}


def wait_until(check: Callable[[], T], *, timeout: float, step: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout}s")
        time.sleep(step)
