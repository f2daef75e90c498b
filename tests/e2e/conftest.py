"""Fixtures the end-to-end modules share, on top of ``tests/conftest.py``'s ``wechat``.
Each is module-scoped: every module that asks for one gets its own.

- ``wechat_app``: the simulator seen through its website app
  (``tests.helpers.raw_e2e.WeChat``), as the raw-socket tests sign in with it;
- ``upstream``: the header-echo app (``tests.helpers.upstreams.EchoUpstream``);
- ``raw``: a ``RawUpstream`` that records requests byte for byte and echoes them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.simulator import SimulatorServer
from tests.helpers.raw_e2e import WeChat
from tests.helpers.upstreams import EchoUpstream, RawUpstream


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
