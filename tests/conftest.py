"""Fixtures the end-to-end modules share. Each is module-scoped: every module that asks for
one gets its own, started before its first test and stopped after its last.

- ``wechat``: the project's WeChat simulator (``Simulator.default()``) on a loopback socket;
- ``wechat_app``: the same simulator seen through its website app (``tests.raw_e2e.WeChat``),
  as the raw-socket tests sign in with it;
- ``upstream``: the header-echo app (``tests.upstreams.EchoUpstream``);
- ``raw``: a ``RawUpstream`` that records requests byte for byte and echoes them.

``clean_simulator`` (per test, for modules that ask for it with
``pytest.mark.usefixtures``) clears the simulator's faults and call log before a test
and its faults after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.simulator import Simulator, SimulatorServer
from tests.raw_e2e import WeChat
from tests.upstreams import EchoUpstream, RawUpstream


@pytest.fixture(scope="module")
def wechat() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator.default()) as server:
        yield server


@pytest.fixture(scope="module")
def wechat_app(wechat: SimulatorServer) -> WeChat:
    return WeChat(wechat)


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as app:
        yield app


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def clean_simulator(wechat: SimulatorServer) -> Iterator[None]:
    wechat.simulator.clear_faults()
    wechat.simulator.clear_calls()
    yield
    wechat.simulator.clear_faults()
