"""The WeChat simulator served on a real loopback socket: its wire bytes and a reset
connection. Everything else about it, in-process, is ``tests/unit/test_simulator.py``."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from gateway.simulator import Fault, Simulator, SimulatorServer

WEB = "wx5e1a2b3c4d5e6f70"


def secret_of(sim: Simulator, app_id: str) -> str:
    return next(app.app_secret for app in sim.apps if app.app_id == app_id)


# --- on a real socket ---------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator.default()) as server:
        yield server


def raw_get(server: SimulatorServer, path: str) -> http.client.HTTPResponse:
    host = urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=5)
    conn.request("GET", path)
    return conn.getresponse()


def test_wire_bytes_over_a_real_socket(
    served: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = served.simulator
    secret = secret_of(sim, WEB)
    code = sim.mint_code(WEB, "zhangsan")
    resp = raw_get(
        served,
        f"/sns/oauth2/access_token?appid={WEB}&secret={secret}&code={code}"
        "&grant_type=authorization_code",
    )
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/plain"
    t = json.loads(resp.read())
    resp = raw_get(served, f"/sns/userinfo?access_token={t['access_token']}&openid={t['openid']}")
    raw = resp.read()
    assert resp.getheader("Content-Type") == "text/plain"
    assert "张三\x14🚀".encode() in raw and b"https:\\/\\/" in raw
    assert "/sns/userinfo" in caplog.text
    for value in (secret, code, t["access_token"]):
        assert value not in caplog.text


def test_reset_fault_drops_the_connection(served: SimulatorServer) -> None:
    served.simulator.add_fault(Fault("auth", "reset"))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        raw_get(served, "/sns/auth?access_token=a&openid=b")
    assert [c.outcome for c in served.simulator.calls("auth")] == ["reset"]
    assert raw_get(served, "/sns/auth").status == 200
