"""Browser fixtures: Debian's Chromium driven by Playwright against pytest-django's live server."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from factory_bridge.tools.simulator import FactorySimulator
from tests.browser import DESKTOP

# Playwright's sync API runs an event loop in the test thread, and the session-scoped browser
# keeps it there for every test collected after this one; the ORM calls made between page
# actions are still plain synchronous calls.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Page actions fail fast: everything is local, a missing element should not cost 30 s.
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make browser contexts (desktop viewport unless told) closed after the test.

    Every page must work under the Content-Security-Policy: a violation the browser reports
    on its console (a blocked inline script or style, a resource from elsewhere) fails the test.
    """
    contexts: list[BrowserContext] = []
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(f"{message.page.url if message.page else '?'}: {message.text}")

    def make(**options: object) -> BrowserContext:
        context = browser.new_context(**{"viewport": DESKTOP, "locale": "ko-KR", **options})
        context.set_default_timeout(TIMEOUT_MS)
        context.on("console", on_console)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert violations == []


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context().new_page()


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SCREENSHOTS_DIR when set (`make screenshots`: docs/screenshots), else a temporary folder."""
    configured = os.environ.get("SCREENSHOTS_DIR")
    if not configured:
        return tmp_path_factory.mktemp("screenshots")
    path = Path(configured).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def screenshot(screenshots_dir: Path) -> Callable[[Page, str], Path]:
    """Save a full-page PNG under the screenshots folder."""

    def save(page: Page, name: str) -> Path:
        path = screenshots_dir / name
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture
def start_factory(settings, live_server) -> Iterator[Callable[[float], FactorySimulator]]:  # type: ignore[no-untyped-def]
    """Start the legacy factory over HTTP, calling back the live server `delay` s after an order."""
    started: list[FactorySimulator] = []

    def start(delay: float) -> FactorySimulator:
        simulator = FactorySimulator(delay=delay)
        simulator.start()
        started.append(simulator)
        settings.FACTORY_API_URL = simulator.url
        settings.PUBLIC_BASE_URL = live_server.url
        return simulator

    yield start
    for simulator in started:
        simulator.stop()
