"""Starting and stopping ``serve``: one start line from the master with what this gateway is
(no secret in it), and a port already in use as one clear line and exit 1 at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers.support import (
    APP_SECRET,
    SESSION_SECRET,
    GatewayProcess,
    base_config,
    free_port,
)


def test_one_start_line_from_the_master(tmp_path: Path) -> None:
    port = free_port()
    config = base_config(
        port,
        "http://127.0.0.1:9",
        server={"workers": 2},
        upstreams=[
            {"prefix": "/grafana/", "url": "http://127.0.0.1:3000"},
            {"prefix": "/", "url": "http://127.0.0.1:9"},
        ],
    )
    with GatewayProcess(config, tmp_path) as gateway:
        time.sleep(0.5)
        log = gateway.log()
    starts = [line for line in log.splitlines() if "wechat-gateway 0.1.0 serving" in line]
    assert len(starts) == 1, log
    line = starts[0]
    assert f"http://127.0.0.1:{port}" in line and "2 gevent workers" in line
    assert "/grafana/ -> http://127.0.0.1:3000" in line and "/ -> http://127.0.0.1:9" in line
    assert "state: sqlite://" in line
    assert APP_SECRET not in log and SESSION_SECRET not in log


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = GatewayProcess(base_config(port, "http://127.0.0.1:9"), tmp_path)
        gateway.config_path.write_text(yaml.safe_dump(gateway.config), encoding="utf-8")
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "-c", str(gateway.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        took = time.monotonic() - started
    assert result.returncode == 1
    assert took < 5
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in lines[0]


def test_the_demo_on_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        took = time.monotonic() - started
    assert result.returncode == 1 and took < 5
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines  # no banner, no repeated errors
    assert "already in use" in lines[0] and "--port" in lines[0]
