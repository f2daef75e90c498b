"""Helpers for tests that run real processes: free ports, a config writer, the gateway.

``GatewayProcess`` starts the real ``wechat-gateway serve`` command (gunicorn and all) on
loopback with a config written to a temporary file, waits until ``/_gateway/healthz``
answers, and stops it with SIGTERM like an orchestrator would (``stop_process``).

Also here, for every end-to-end client: the session cookie's name (``COOKIE``) and a
minted value for it (``session_cookie``), a browser's ``Accept`` (``HTML_ACCEPT``), the
action links of a gateway page (``links``), and header lookup by name (``HeaderLookup``).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

SESSION_SECRET = "test-session-secret-0123456789abcdefghij"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "test-app-secret-do-not-log-0123456789"
COOKIE = "wechat_gateway"
HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def base_config(port: int, upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A complete, valid config for a gateway on ``port`` in front of ``upstream_url``."""
    config: dict[str, Any] = {
        "public_url": f"http://127.0.0.1:{port}",
        "server": {"bind": f"127.0.0.1:{port}", "workers": 2},
        "wechat": {"app_id": APP_ID, "app_secret": APP_SECRET, "timeout": 2},
        "session": {"secret": SESSION_SECRET},
        "upstreams": [{"prefix": "/", "url": upstream_url, "timeout": 3}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def stop_process(
    process: subprocess.Popen[bytes] | None, sig: signal.Signals, *, timeout: float
) -> None:
    """Send ``sig`` to a child still running and wait for it; kill it after ``timeout``."""
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GatewayProcess:
    """``wechat-gateway serve`` as a child process; use as a context manager."""

    def __init__(
        self, config: dict[str, Any], directory: Path, *, env: dict[str, str] | None = None
    ):
        self.port = int(config["server"]["bind"].rsplit(":", 1)[1])
        # Each gateway its own embedded state store, unless the test chose one: revocations
        # in one test must not reach another's sessions.
        state = {"url": f"sqlite://{directory}/state-{self.port}.db"}
        self.config = {"state": state, **config}
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / f"gateway-{self.port}.yaml"
        self.log_path = directory / f"gateway-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                    sock.sendall(
                        b"GET /_gateway/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    )
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"gateway did not become healthy:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, timeout=15)
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )


def session_cookie(
    openid: str = "oTestOpenID0000000000000001",
    *,
    unionid: str | None = "uTestUnionID000000000000001",
    nickname: str = "Tester",
    avatar: str = "https://thirdwx.qlogo.cn/mmopen/vi_32/test/132",
    app_id: str = APP_ID,
    secret: str = SESSION_SECRET,
    lifetime: int = 3600,
) -> str:
    """A valid session cookie value, as the gateway would set after a login."""
    from gateway.auth.session import Session, SessionCodec

    now = int(time.time())
    session = Session(
        openid=openid,
        app_id=app_id,
        unionid=unionid,
        nickname=nickname,
        avatar=avatar,
        issued_at=now,
        expires_at=now + lifetime,
    )
    return SessionCodec(secret).encode(session)


def links(page: str) -> dict[str, str]:
    """label -> href of the action links (``<a class="button">``) on a gateway page."""
    return {
        html.unescape(label): html.unescape(href)
        for href, label in re.findall(r'<a class="button" href="([^"]*)">([^<]*)</a>', page)
    }


class HeaderLookup:
    """``values`` and ``value`` of a header among ``headers``: (name, value) pairs as they
    came, repeats kept, names matched whatever their case."""

    #: How a header that came more than once is reported: "X-Name received 2 times".
    repeated = "received"

    if TYPE_CHECKING:

        @property
        def headers(self) -> Sequence[tuple[str, str]]: ...

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def value(self, name: str) -> str | None:
        values = self.values(name)
        assert len(values) <= 1, f"{name} {self.repeated} {len(values)} times: {values}"
        return values[0] if values else None
