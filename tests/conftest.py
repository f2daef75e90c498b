"""Fixtures every lane may use. Each is module-scoped: every module that asks for one gets
its own, started before its first test and stopped after its last.

- ``wechat``: the project's WeChat simulator (``Simulator.default()``) on a loopback socket.

``clean_simulator`` (per test, for modules that ask for it with
``pytest.mark.usefixtures``) clears the simulator's faults and call log before a test
and its faults after it.

The end-to-end lane's own fixtures are in ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.simulator import Simulator, SimulatorServer


@pytest.fixture(scope="module")
def wechat() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator.default()) as server:
        yield server


@pytest.fixture
def clean_simulator(wechat: SimulatorServer) -> Iterator[None]:
    wechat.simulator.clear_faults()
    wechat.simulator.clear_calls()
    yield
    wechat.simulator.clear_faults()
