"""The ways the gateway is run and what it logs: the gthread worker, ``gateway.wsgi`` under
a plain gunicorn, key rotation through the running app and ``upstreams[].read_timeout``.
Access lines with secrets redacted are ``tests/unit/test_server.py``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from gateway.auth.session import SessionCodec
from tests.helpers.support import (
    SESSION_SECRET,
    GatewayProcess,
    base_config,
    free_port,
    session_cookie,
    stop_process,
    wait_for_port,
)
from tests.helpers.upstreams import EchoUpstream, Exchange, RawUpstream

OLD_SECRET = "an-old-session-secret-0123456789abcdefgh"


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as app:
        yield app


def test_gthread_worker_serves(tmp_path: Path, upstream: EchoUpstream) -> None:
    port = free_port()
    config = base_config(port, upstream.url, server={"worker_class": "gthread", "threads": 4})
    with GatewayProcess(config, tmp_path) as gateway:
        reply = requests.get(
            gateway.url + "/x", cookies={"wechat_gateway": session_cookie()}, timeout=5
        )
        assert reply.status_code == 200
        assert "Using worker: gthread" in gateway.log()


def test_wsgi_entry_under_plain_gunicorn(tmp_path: Path, upstream: EchoUpstream) -> None:
    port = free_port()
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(base_config(port, upstream.url)), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "gateway.wsgi:application"],
        env={**os.environ, "WECHAT_GATEWAY_CONFIG": str(config_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/_gateway/healthz", timeout=5).text == "ok\n"
        assert requests.get(base + "/x", allow_redirects=False, timeout=5).status_code == 302
        reply = requests.get(base + "/x", cookies={"wechat_gateway": session_cookie()}, timeout=5)
        assert reply.status_code == 200
    finally:
        stop_process(process, signal.SIGTERM, timeout=10)


def test_a_cookie_sealed_with_a_previous_secret_is_reissued(
    tmp_path: Path, upstream: EchoUpstream
) -> None:
    port = free_port()
    config = base_config(port, upstream.url, session={"previous_secrets": [OLD_SECRET]})
    with GatewayProcess(config, tmp_path) as gateway:
        old = session_cookie(openid="oRotated", secret=OLD_SECRET)
        reply = requests.get(gateway.url + "/x", cookies={"wechat_gateway": old}, timeout=5)
        assert reply.status_code == 200
        reissued = reply.cookies.get("wechat_gateway")
        assert reissued is not None and reissued != old
        session = SessionCodec(SESSION_SECRET).decode(reissued)  # the current key alone
        assert session is not None and session.openid == "oRotated"
        # A cookie already sealed with the current secret is not re-issued.
        fresh = requests.get(gateway.url + "/x", cookies={"wechat_gateway": reissued}, timeout=5)
        assert "wechat_gateway" not in fresh.cookies


def test_an_upstream_silent_longer_than_read_timeout_aborts_the_response(tmp_path: Path) -> None:
    raw = RawUpstream()

    def stall(exchange: Exchange) -> None:
        exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 100_000)
        time.sleep(4)
        exchange.close = True

    raw.route("/stall", stall)
    port = free_port()
    config = base_config(port, raw.url)
    config["upstreams"][0]["read_timeout"] = 1
    try:
        with GatewayProcess(config, tmp_path):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(
                    b"GET /stall HTTP/1.1\r\nHost: t\r\n"
                    b"Cookie: wechat_gateway=" + session_cookie().encode() + b"\r\n\r\n"
                )
                started = time.monotonic()
                received = b""
                while chunk := client.recv(65536):
                    received += chunk
                elapsed = time.monotonic() - started
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert len(body) < 300_000  # cut short, and the connection closed
            assert elapsed < 3.5, elapsed  # by read_timeout, not by the upstream giving up
    finally:
        raw.close()
