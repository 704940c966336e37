import threading
from collections.abc import Callable, Iterator
from time import monotonic, sleep
from typing import Any

import pytest
import requests
from django.db import connection

from factory_bridge import aws as aws_clients
from factory_bridge.services import pollers
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Factory, Product
from nudged.core.models import WorkerLease


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., FactorySimulator]]:
    """Start factory simulators on free ports; all are stopped at the end of the test."""
    started: list[FactorySimulator] = []

    def make(**options: Any) -> FactorySimulator:
        simulator = FactorySimulator(**{"port": 0, **options})
        simulator.start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def watcher(aws: str) -> Iterator[threading.Thread]:
    """The DLQ watcher loop in a thread, as the cluster runs it; stopped by taking its lease."""

    def watch() -> None:
        try:
            pollers.run_poller(name="dlq", seconds=300, handover=False)
        finally:
            connection.close()

    thread = threading.Thread(target=watch, name="dlq-watcher", daemon=True)
    thread.start()
    deadline = monotonic() + 15
    while not WorkerLease.objects.filter(name="dlq").exclude(owner="").exists():
        assert monotonic() < deadline, "the watcher did not start"
        sleep(0.1)
    yield thread
    WorkerLease.objects.filter(name="dlq").update(owner="", heartbeat_at=None)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the watcher did not stop"


@pytest.fixture
def empty_moto(moto_server: str) -> Iterator[str]:
    """A moto server with nothing provisioned yet."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=5)
    aws_clients.reset()
    yield moto_server
    aws_clients.reset()


@pytest.fixture
def simulator(settings) -> Iterator[FactorySimulator]:
    """The factory, far too slow to call back during a test: tests post the callback."""
    factory = FactorySimulator(port=0, delay=60)
    factory.start()
    settings.FACTORY_API_URL = factory.url
    yield factory
    factory.stop()


@pytest.fixture
def second_product(factory: Factory) -> Product:
    return Product.objects.create(
        sku="CP-502102", name="우유 생크림 도넛", price=3900, stock=1, factory=factory
    )
