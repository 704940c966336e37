"""Shared fixtures: a real moto server over HTTP, provisioned queues, catalog rows."""

import fcntl
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from nudged.core.logs import AddLogContext, JsonLineFormatter

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}.items():
    os.environ.setdefault(_name, _value)


_session_lock = None


def pytest_configure(config: pytest.Config) -> None:
    """Run one test session at a time per test database and moto port.

    Sessions with the same database and port would flush each other's tables; a second one
    waits here. Checkouts with their own DATABASE_URL and AWS_ENDPOINT_URL run side by side.
    """
    global _session_lock
    database = settings.DATABASES["default"]["NAME"]
    port = urlparse(settings.AWS_ENDPOINT_URL).port
    _session_lock = open(f"/tmp/nudged-tests-{database}-{port}.lock", "w")  # noqa: SIM115
    fcntl.flock(_session_lock, fcntl.LOCK_EX)


def _wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server process at settings.AWS_ENDPOINT_URL for the whole session."""
    url = settings.AWS_ENDPOINT_URL
    parsed = urlparse(url)
    binary = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(binary), "-H", parsed.hostname, "-p", str(parsed.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(parsed.hostname, parsed.port)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A Redis of this session's own, on a free port, keeping nothing on disk."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port("127.0.0.1", port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def limit_store(redis_server: str, settings: Any) -> str:
    """Rate limits counted in Redis, shared by every process, as in production."""
    settings.CACHE_URL = redis_server
    return redis_server


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    """Each test starts with no request counted against a rate limit."""
    from nudged.core import ratelimits

    ratelimits.clear()
    yield
    ratelimits.clear()


@pytest.fixture
def aws(moto_server: str) -> Iterator[str]:
    """A clean moto server with Nudged's topics and queues provisioned."""
    from factory_bridge import aws as aws_clients
    from factory_bridge.tools.provisioning import provision

    requests.post(f"{moto_server}/moto-api/reset", timeout=5)
    aws_clients.reset()
    provision()
    yield moto_server
    aws_clients.reset()


@pytest.fixture
def factory(db):  # type: ignore[no-untyped-def]
    from inventory.models import Factory

    return Factory.objects.create(
        code="FF-500293", name="부산도너츠 공장", manager_email="dob_factory@codeatates.com"
    )


@pytest.fixture
def product(factory):  # type: ignore[no-untyped-def]
    from inventory.models import Product

    return Product.objects.create(
        sku="CP-502101", name="부산도너츠", price=19900, stock=3, factory=factory
    )


@pytest.fixture
def no_events(settings):  # type: ignore[no-untyped-def]
    """Turn the event pipeline off for tests that are only about stock and orders."""
    settings.EVENTS_ENABLED = False


@pytest.fixture(autouse=True)
def fresh_local_cache() -> Iterator[None]:
    """Each test starts without what another left in the web process's own cache."""
    from django.core.cache import caches

    caches["local"].clear()
    yield
    caches["local"].clear()


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """LOGGING's handler writing JSON lines, as under production settings, to a buffer.

    Yields a function that returns the lines written so far, each parsed (every line must
    be one JSON object).
    """
    [handler] = [
        h
        for h in logging.getLogger("django").handlers
        if any(isinstance(f, AddLogContext) for f in h.filters)
    ]
    stream = io.StringIO()
    previous_stream = handler.setStream(stream)
    previous_formatter = handler.formatter
    handler.setFormatter(JsonLineFormatter())

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield lines
    finally:
        handler.setStream(previous_stream)
        handler.setFormatter(previous_formatter)


@pytest.fixture(autouse=True)
def fresh_sales_pace() -> Iterator[None]:
    """Neither a failed sales publish nor the loop's interval holds back the next test."""
    from factory_bridge.services.outbox import sales_pace

    sales_pace.reset()
    yield
    sales_pace.reset()


@pytest.fixture
def migrate_to() -> Iterator[Callable[[list[tuple[str, str]], str], Any]]:
    """Migrate to some targets and get a model as it is there ("shop.Order"); the schema is
    the latest again afterwards."""

    def migrate(targets: list[tuple[str, str]], model: str) -> Any:
        executor = MigrationExecutor(connection)
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps.get_model(model)

    yield migrate
    latest = MigrationExecutor(connection)
    latest.migrate(latest.loader.graph.leaf_nodes())
