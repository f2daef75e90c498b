"""SIGHUP reloads the configuration of a running gateway: validated first (problems logged,
the old configuration kept), then new requests use the new one while a request in flight
and an open WebSocket carry on undisturbed."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.support import GatewayProcess, base_config, free_port, session_cookie
from tests.helpers.websocket import WsUpstream, connect, open_websockets

COOKIE = ("Cookie", f"wechat_gateway={session_cookie()}")


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(2)
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def slow() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def ws_app() -> Iterator[WsUpstream]:
    app = WsUpstream()
    yield app
    app.close()


def rewrite(gateway: GatewayProcess, change: Any) -> None:
    config = yaml.safe_load(gateway.config_path.read_text())
    change(config)
    gateway.config_path.write_text(yaml.safe_dump(config))
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGHUP)


def seen_headers(gateway: GatewayProcess) -> dict[str, str]:
    reply = requests.get(gateway.url + "/plain", headers=dict([COOKIE]), timeout=5)
    assert reply.status_code == 200, reply.text[:300]
    return {name.lower(): value for name, value in reply.json()["headers"]}


def test_a_reload_keeps_what_is_in_flight_and_applies_to_what_comes(
    tmp_path: Path, slow: str, ws_app: WsUpstream
) -> None:
    port = free_port()
    config = base_config(
        port,
        ws_app.url,
        server={"workers": 2},
        upstreams=[{"prefix": "/slow", "url": slow}, {"prefix": "/", "url": ws_app.url}],
    )
    with GatewayProcess(config, tmp_path) as gateway:
        socket_ = connect(port, "/chat", [COOKIE])
        socket_.send("before")
        assert socket_.recv(timeout=5) == "before"
        in_flight: dict[str, Any] = {}

        def slow_request() -> None:
            reply = requests.get(gateway.url + "/slow", headers=dict([COOKIE]), timeout=10)
            in_flight["status"] = reply.status_code
            in_flight["headers"] = {k.lower(): v for k, v in reply.json().items()}

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)  # the slow request is with the app now

        def add_header(config: dict[str, Any]) -> None:
            for upstream in config["upstreams"]:
                upstream["headers"] = {"X-User": "{openid}"}
            config["server"]["log_format"] = "json"

        rewrite(gateway, add_header)
        deadline = time.monotonic() + 5
        while "x-user" not in seen_headers(gateway):
            assert time.monotonic() < deadline, "the new configuration was not taken up"
            time.sleep(0.1)
        for _ in range(6):  # every worker has it
            assert seen_headers(gateway)["x-user"] == "oTestOpenID0000000000000001"

        thread.join(10)
        assert in_flight["status"] == 200
        assert "x-user" not in in_flight["headers"]  # it was sent under the old configuration

        socket_.send("after")
        assert socket_.recv(timeout=5) == "after"
        assert open_websockets(port) == 1
        socket_.close()
        last = [line for line in gateway.log().splitlines() if line.strip()][-1]
        assert json.loads(last)["level"]  # the log format changed with it

        # A broken file: every problem logged, the running configuration kept.
        def break_it(config: dict[str, Any]) -> None:
            config["public_url"] = "ftp://nowhere"
            config["upstreams"][1]["timeout"] = "soon"

        rewrite(gateway, break_it)
        deadline = time.monotonic() + 5
        while gateway.log().count("reload refused") < 3:
            assert time.monotonic() < deadline, gateway.log()[-2000:]
            time.sleep(0.1)
        log = gateway.log()
        assert "public_url" in log and "upstreams[1].timeout" in log
        assert seen_headers(gateway)["x-user"] == "oTestOpenID0000000000000001"
        assert gateway.process is not None and gateway.process.poll() is None

        # What only a restart can change is said so, and the rest applies.
        def move(config: dict[str, Any]) -> None:
            config["public_url"] = f"http://127.0.0.1:{port}"
            config["upstreams"][1]["timeout"] = 3
            config["server"]["bind"] = f"127.0.0.1:{free_port()}"
            config["upstreams"][1]["headers"] = {"X-Who": "{openid}"}

        rewrite(gateway, move)
        deadline = time.monotonic() + 5
        while "x-who" not in seen_headers(gateway):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "server.bind changed; it takes effect at the next restart" in gateway.log()
        assert "Traceback" not in gateway.log()
