from collections.abc import Callable, Iterator
from typing import Any

import pytest

from factory_bridge.simulator import FactorySimulator


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
