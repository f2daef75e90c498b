"""The WebSocket benchmark: the gateway's tunnel side by side with nginx and with no proxy.

``make bench`` runs it after the HTTP measurements (``bench/run.py``); alone it is

    .venv/bin/python bench/websocket.py                # the full WebSocket run, ~3 minutes
    .venv/bin/python bench/websocket.py --quick        # a smaller one, to iterate

which prints every number, PASS/FAIL per target, and saves the raw results in
``bench/results/websocket-<time>.json`` (``bench/run.py`` folds them into its own results
and into ``docs/benchmarks.md``).

Three measurements, every contender in front of the same upstream (``bench/ws_upstream.py``,
raw sockets on asyncio: an echo, and a large stream):

1. **Idle memory**: 10,000 WebSockets opened at once through the gateway, then through
   nginx; the summed RSS of the contender's processes (master and workers) with all of them
   open, minus before, over 10,000. Every round starts both contenders afresh, so each
   figure is a new process's (a second batch into a warm process would reuse the first
   one's freed memory and look cheaper). All sockets are then checked alive with one echo
   each, and the RSS taken again.
2. **Echo round trip** with 1,000 WebSockets open through each contender (and 1,000 straight
   to the upstream, the *direct* row): one 32-byte message at a time, each on the next open
   connection, timed from before the send to the last byte of the echo. Rounds interleave
   the contenders; the percentiles pool every round's samples.
3. **One large stream**: the upstream sends 512 MiB in 1 MiB binary frames to one client that
   only counts bytes (and checks the closing frame lands exactly where the count says);
   MB/s at the client, rounds interleaved, the median kept.

The client lives in this process: ``asyncio`` on plain non-blocking sockets to open many
connections with a minimal handshake, blocking sockets for the timed parts, so that it costs
little next to what it measures. Every handshake carries a signed-in session cookie, so the
gateway makes its access decision on each; the gateway runs as users run it,
``wechat-gateway serve -c <config>`` with its defaults (gevent worker, 2 workers).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import clients
import ws_report
import yaml
from apps import bench_session
from services import (
    BENCH,
    PeakRss,
    Service,
    cpu_seconds,
    ensure_system_packages,
    free_ports,
    nginx_binary,
    rss_bytes,
)
from ws_upstream import CLOSE_NORMAL, FRAME_PAYLOAD, accept_key, frame_head

from gateway.auth.session import SessionCodec
from gateway.config.settings import ServerSettings

MIB = 1024 * 1024
RESULTS = BENCH / "results"
_SECRET = "bench-websocket-secret-0123456789abcdefghijklmn"
_COOKIE = "wechat_gateway"
_MESSAGE = 32
_OPEN_CONCURRENCY = 64
_BIG_BUFFERS = """
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      proxy_busy_buffers_size 128k;"""


@dataclasses.dataclass
class Settings:
    idle_connections: int = 10_000
    idle_rounds: int = 2
    latency_connections: int = 1_000
    latency_samples: int = 6_000
    latency_rounds: int = 6
    stream_size: int = 512 * MIB
    stream_rounds: int = 3


QUICK = Settings(
    idle_connections=2_000,
    idle_rounds=1,
    latency_connections=200,
    latency_samples=1_000,
    latency_rounds=2,
    stream_size=128 * MIB,
    stream_rounds=1,
)


@dataclasses.dataclass
class Contender:
    key: str
    label: str
    port: int
    #: The processes whose memory and CPU count; none for the direct row.
    service: Service | None
    gateway: bool = False

    def pids(self) -> list[int]:
        return self.service.pids() if self.service is not None else []


#: Shown on the large stream only; no target refers to them.
REFERENCES = ("nginx_64k",)
CONTENDERS = {
    "gateway": "wechat-gateway",
    "nginx": "nginx",
    "nginx_64k": "nginx, 64 KiB buffers",
    "direct": "direct (no proxy)",
}


def contender_notes(nginx_version: str) -> dict[str, str]:
    server = ServerSettings()
    return {
        "gateway": "`wechat-gateway serve -c <config>` with the default settings (gunicorn, "
        f"the gateway's gevent worker, {server.workers} workers, `worker_connections` "
        f"{server.worker_connections} each, access log on, written to /dev/null, state in "
        "the embedded SQLite store); one upstream, `/` to "
        "the WebSocket upstream. Every handshake carries a signed-in session cookie and an "
        "`Origin` equal to `public_url`'s, so each one passes the Origin check and the access "
        "decision before it goes upstream.",
        "nginx": f"nginx {nginx_version}, 2 worker processes, `worker_rlimit_nofile` the "
        "open files hard limit, `worker_connections` 64 fewer, "
        "`proxy_pass` with `proxy_http_version 1.1`, "
        "`Upgrade: $http_upgrade` and `Connection: upgrade`, `proxy_read_timeout` and "
        "`proxy_send_timeout` 1 h, default buffer sizes, access log off. No authentication.",
        "nginx_64k": "the same nginx with `proxy_buffer_size 64k` (and `proxy_buffers 4 64k`, "
        "`proxy_busy_buffers_size 128k`, which nginx then requires), on the large stream "
        "only: an upgraded connection is copied through a `proxy_buffer_size` buffer each "
        "way (one 4 KiB page by default), and the gateway reads 64 KiB at a time. Not a "
        "target; it shows how much of the comparison is nginx's default buffer size.",
        "direct": "the client straight to the upstream: what the machine, client and upstream "
        "do without a proxy.",
    }


def session_cookie() -> str:
    session = bench_session()
    return f"{_COOKIE}={SessionCodec(_SECRET).encode(session)}"


def gateway_config(port: int, upstream_port: int, workdir: Path) -> dict[str, Any]:
    """The default configuration, but for where to listen, forward and keep state."""
    return {
        "public_url": f"http://127.0.0.1:{port}",
        "server": {"bind": f"127.0.0.1:{port}"},
        "wechat": {"app_id": "wxbench0123456789", "app_secret": "bench-app-secret"},
        "session": {"secret": _SECRET},
        "state": {"url": f"sqlite://{workdir}/state-{port}.db"},
        "upstreams": [{"prefix": "/", "url": f"http://127.0.0.1:{upstream_port}"}],
    }


def nginx_config(
    prefix: Path, port: int, upstream_port: int, files: int, *, buffers: str = ""
) -> str:
    """nginx as the usual WebSocket reverse proxy, each worker allowed ``files`` open files
    and as many connections as they leave room for (a tunnel takes two)."""
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd

        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}
worker_processes 2;
worker_rlimit_nofile {files};
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections {files - 64}; }}
http {{
  access_log off;
{temp}
  upstream ws {{ server 127.0.0.1:{upstream_port}; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;{buffers}
    }}
  }}
}}
"""


def raise_open_files_limit(needed: int) -> int:
    """Room for this client's sockets, and (inherited) for every process started from here:
    the hard limit itself goes up where allowed (root with CAP_SYS_RESOURCE), the soft limit
    to the hard one. The limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(
            f"bench: the open files hard limit is {hard}, below the {needed} asked for: "
            "a contender worker holding most of the tunnels may run out",
            flush=True,
        )
    return hard


# -- the client ------------------------------------------------------------------------------


def handshake(port: int, path: str, cookie: str) -> tuple[bytes, str]:
    """An upgrade request and the ``Sec-WebSocket-Accept`` its answer must carry."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
    )
    return request.encode("latin-1"), accept_key(key)


def check_switch(head: bytes, accept: str) -> None:
    """The answer must switch to WebSocket, for this very handshake."""
    if not head.startswith(b"HTTP/1.1 101 "):
        raise RuntimeError(f"the handshake was answered {head[:300]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept" and value.strip() == accept.encode():
            return
    raise RuntimeError(f"no or a wrong Sec-WebSocket-Accept in {head[:300]!r}")


async def _open_one(port: int, path: str, cookie: str, limit: asyncio.Semaphore) -> socket.socket:
    loop = asyncio.get_running_loop()
    request, accept = handshake(port, path, cookie)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with limit:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request)
            head = b""
            while b"\r\n\r\n" not in head:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise RuntimeError(f"connection closed during the handshake: {head!r}")
                head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        check_switch(head, accept)
        if rest:
            raise RuntimeError(f"unexpected bytes after the 101: {rest[:100]!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def open_websockets(port: int, path: str, count: int, cookie: str) -> list[socket.socket]:
    """``count`` WebSockets to ``path``, their handshakes done; blocking sockets."""

    async def run() -> list[socket.socket]:
        limit = asyncio.Semaphore(_OPEN_CONCURRENCY)
        tasks = [
            asyncio.ensure_future(asyncio.wait_for(_open_one(port, path, cookie, limit), 60))
            for _ in range(count)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for item in done:
                if isinstance(item, socket.socket):
                    item.close()
            raise

    socks = asyncio.run(run())
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(30)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    """End each WebSocket with a close frame (masked, code 1000), then the connection."""
    frame = frame_head(0x8, 2, mask=b"\0\0\0\0") + b"\x03\xe8"
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(frame)
    for sock in socks:
        sock.close()


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        count = sock.recv_into(view[got:])
        if not count:
            raise RuntimeError("the connection closed before the echo came back")
        got += count


def echo_frames(count: int) -> list[tuple[bytes, bytes]]:
    """(masked frame to send, the exact unmasked frame the echo must be), ``count`` of them."""
    frames = []
    for i in range(count):
        payload = f"{i:08d}".encode() + os.urandom(_MESSAGE // 2 - 4).hex().encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
        frames.append(
            (frame_head(0x2, _MESSAGE, mask=mask) + masked, frame_head(0x2, _MESSAGE) + payload)
        )
    return frames


def echo_round(socks: list[socket.socket], frames: list[tuple[bytes, bytes]]) -> list[float]:
    """One message at a time, each on the next connection: round-trip seconds of each."""
    answer = bytearray(len(frames[0][1]))
    view = memoryview(answer)
    clock = time.perf_counter
    times = []
    for i, (frame, expected) in enumerate(frames):
        sock = socks[i % len(socks)]
        started = clock()
        sock.sendall(frame)
        _recv_exactly(sock, view)
        times.append(clock() - started)
        if answer != expected:
            raise RuntimeError(f"the echo came back wrong: {bytes(answer)!r}")
    return times


def stream(port: int, size: int, cookie: str) -> float:
    """Seconds from the upgrade request to the last byte of a ``size``-byte stream, every
    byte counted; the upstream's close frame must end exactly where the framing says."""
    frames, rest = divmod(size, FRAME_PAYLOAD)
    expected = frames * (len(frame_head(0x2, FRAME_PAYLOAD)) + FRAME_PAYLOAD)
    if rest:
        expected += len(frame_head(0x2, rest)) + rest
    expected += len(CLOSE_NORMAL)
    request, accept = handshake(port, f"/stream/{size}", cookie)
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError(f"connection closed during the handshake: {head!r}")
            head += data
        head, _, early = head.partition(b"\r\n\r\n")
        check_switch(head, accept)
        received = len(early)
        tail = early[-4:]
        while received < expected:
            count = sock.recv_into(view)
            if not count:
                break
            received += count
            tail = (tail + bytes(view[max(0, count - 4) : count]))[-4:]
        elapsed = time.perf_counter() - started
        if received != expected or tail != CLOSE_NORMAL:
            raise RuntimeError(f"the stream gave {received} bytes of {expected}, ending {tail!r}")
        with contextlib.suppress(OSError):
            sock.sendall(frame_head(0x8, 2, mask=b"\0\0\0\0") + b"\x03\xe8")
    return elapsed


# -- watching the contenders -----------------------------------------------------------------


def open_tunnels(port: int) -> int:
    """The gateway's own count of open tunnels, summed over its workers."""
    status, body = clients.get(port, "/_gateway/metrics", {})
    found = re.search(rb"^wechat_gateway_open_websockets\s+(\d+)", body, re.MULTILINE)
    if status != 200 or found is None:
        raise RuntimeError(f"no open_websockets gauge in /_gateway/metrics ({status})")
    return int(found.group(1))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.1)


def wait_tunnels(contender: Contender, count: int) -> None:
    if contender.gateway:
        wait_for(
            f"the gateway counts {count} open WebSockets",
            lambda: open_tunnels(contender.port) == count,
        )


def settled_rss(pids: list[int], timeout: float = 15) -> int:
    """The summed RSS once it stops moving (two samples 0.5 s apart within 64 KiB)."""
    last = rss_bytes(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_bytes(pids)
        if abs(now - last) <= 64 * 1024:
            return now
        last = now
    return last


# -- the measurements ------------------------------------------------------------------------


def idle_memory(contender: Contender, count: int, cookie: str) -> dict[str, Any]:
    """RSS growth of the contender's processes with ``count`` idle WebSockets open."""
    pids = contender.pids()
    # Warm-up: the first tunnels load and build whatever is built once.
    warm = open_websockets(contender.port, "/echo", 20, cookie)
    echo_round(warm, echo_frames(len(warm)))
    close_all(warm)
    wait_tunnels(contender, 0)
    before = settled_rss(pids)
    started = time.perf_counter()
    socks = open_websockets(contender.port, "/echo", count, cookie)
    try:
        opened = time.perf_counter() - started
        wait_tunnels(contender, count)
        after_open = settled_rss(pids)
        # Each one alive: a message there and back on every socket.
        echo_round(socks, echo_frames(count))
        after_echo = settled_rss(pids)
    finally:
        close_all(socks)
    wait_tunnels(contender, 0)
    if sorted(pids) != sorted(contender.pids()):
        raise RuntimeError(f"{contender.label}: a process died or was replaced")
    return {
        "connections": count,
        "processes": len(pids),
        "open_seconds": opened,
        "rss_before": before,
        "rss_open": after_open,
        "rss_after_echo": after_echo,
    }


def idle_rounds(
    settings: Settings,
    ports: Iterator[int],
    upstream_port: int,
    workdir: Path,
    keys: list[str],
    cookie: str,
    services: list[Service],
) -> dict[str, list[dict[str, Any]]]:
    """Fresh contenders each round, measured one after the other (order alternating)."""
    keys = [key for key in keys if key not in ("direct", *REFERENCES)]
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for round_ in range(settings.idle_rounds):
        with contextlib.ExitStack() as stack:
            contenders = start_contenders(
                stack, ports, upstream_port, workdir, keys, f"idle{round_ + 1}", services
            )
            measured = [c for c in contenders if c.service is not None]
            if round_ % 2:
                measured.reverse()
            for contender in measured:
                with _step(contender, f"{settings.idle_connections:,} idle WebSockets"):
                    record = idle_memory(contender, settings.idle_connections, cookie)
                results[contender.key].append(record)
                grow = record["rss_open"] - record["rss_before"]
                echo = record["rss_after_echo"] - record["rss_before"]
                print(
                    f"ws idle     {contender.label:<21} round {round_ + 1}: "
                    f"{record['connections']:,} open in {record['open_seconds']:.1f} s, RSS "
                    f"{record['rss_before'] / MIB:.1f} -> {record['rss_open'] / MIB:.1f} MiB: "
                    f"{grow / record['connections'] / 1024:.1f} KiB per WebSocket "
                    f"({echo / record['connections'] / 1024:.1f} after one echo each)",
                    flush=True,
                )
    return results


def latency_and_stream(
    settings: Settings,
    contenders: list[Contender],
    cookie: str,
    results: dict[str, Any],
    *,
    latency: bool,
    streams: bool,
) -> None:
    if latency:
        measured = [c for c in contenders if c.key not in REFERENCES]
        results["latency"] = latency_rounds(settings, measured, cookie)
    if streams:
        results["stream"] = stream_rounds(settings, contenders, cookie)


def latency_rounds(
    settings: Settings, contenders: list[Contender], cookie: str
) -> dict[str, dict[str, Any]]:
    """Echo round trips with ``latency_connections`` open through every contender at once."""
    per_round = settings.latency_samples // settings.latency_rounds
    out: dict[str, dict[str, Any]] = {}
    opened: dict[str, list[socket.socket]] = {}
    try:
        for contender in contenders:
            with _step(contender, "opening the latency connections"):
                opened[contender.key] = open_websockets(
                    contender.port, "/echo", settings.latency_connections, cookie
                )
            wait_tunnels(contender, settings.latency_connections)
            # Warm-up: every connection once, not counted.
            echo_round(opened[contender.key], echo_frames(settings.latency_connections))
            out[contender.key] = {"samples_us": [], "rounds": []}
        for round_ in range(settings.latency_rounds):
            order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
            for contender in order:
                frames = echo_frames(per_round)
                with _step(contender, "the echo round trips"):
                    times = echo_round(opened[contender.key], frames)
                micros = [round(t * 1e6, 1) for t in times]
                out[contender.key]["samples_us"].extend(micros)
                p50 = ws_report.percentile(micros, 50)
                p99 = ws_report.percentile(micros, 99)
                out[contender.key]["rounds"].append({"p50_us": p50, "p99_us": p99})
                print(
                    f"ws latency  {contender.label:<21} round {round_ + 1}: p50 "
                    f"{p50 / 1000:.3f} ms  p99 {p99 / 1000:.3f} ms  ({len(micros)} echoes, "
                    f"{settings.latency_connections} open)",
                    flush=True,
                )
    finally:
        for socks in opened.values():
            close_all(socks)
    for contender in contenders:
        wait_tunnels(contender, 0)
    return out


def stream_rounds(
    settings: Settings, contenders: list[Contender], cookie: str
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {c.key: [] for c in contenders}
    for round_ in range(settings.stream_rounds):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for contender in order:
            time.sleep(0.5)
            pids = contender.pids()
            cpu_before = cpu_seconds(pids)
            with _step(contender, "the large stream"), PeakRss(pids) as rss:
                seconds = stream(contender.port, settings.stream_size, cookie)
            record = {
                "size": settings.stream_size,
                "seconds": seconds,
                "rss_baseline": rss.baseline,
                "rss_peak": rss.peak,
                "cpu_seconds": cpu_seconds(pids) - cpu_before,
            }
            out[contender.key].append(record)
            memory = (
                f"  RSS {rss.baseline / MIB:.1f} -> {rss.peak / MIB:.1f} MiB, "
                f"CPU {record['cpu_seconds']:.2f} s"
                if pids
                else ""
            )
            print(
                f"ws stream   {contender.label:<21} round {round_ + 1}: "
                f"{settings.stream_size / 1e6 / seconds:,.0f} MB/s "
                f"({settings.stream_size / MIB:g} MiB in {seconds:.2f} s){memory}",
                flush=True,
            )
    return out


# -- the processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def _step(contender: Contender, what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        exc.add_note(f"while measuring {what} on {contender.label}")
        raise


def _gateway_argv(config: Path) -> list[str]:
    """The console script users run; ``python -m gateway`` where it is not installed."""
    script = Path(sys.executable).with_name("wechat-gateway")
    if script.exists():
        return [str(script), "serve", "-c", str(config)]
    return [sys.executable, "-m", "gateway", "serve", "-c", str(config)]


def start_contenders(
    stack: contextlib.ExitStack,
    ports: Iterator[int],
    upstream_port: int,
    workdir: Path,
    keys: list[str],
    tag: str,
    services: list[Service],
) -> list[Contender]:
    contenders = []
    for key in keys:
        if key == "direct":
            contenders.append(Contender(key, CONTENDERS[key], upstream_port, None))
        elif key in ("nginx", "nginx_64k"):
            port = next(ports)
            prefix = workdir / f"{key}-{tag}"
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(
                nginx_config(
                    prefix,
                    port,
                    upstream_port,
                    open_files_limit(),
                    buffers=_BIG_BUFFERS if key == "nginx_64k" else "",
                ),
                encoding="utf-8",
            )
            argv = [nginx_binary() or "nginx", "-p", str(prefix), "-e", str(prefix / "error.log")]
            service = stack.enter_context(
                Service(f"ws-{key}-{tag}", [*argv, "-c", str(conf)], port, workdir)
            )
            services.append(service)
            contenders.append(Contender(key, CONTENDERS[key], port, service))
        elif key == "gateway":
            port = next(ports)
            config = workdir / f"gateway-{tag}.yaml"
            config.write_text(
                yaml.safe_dump(gateway_config(port, upstream_port, workdir)), encoding="utf-8"
            )
            service = stack.enter_context(
                Service(
                    f"ws-gateway-{tag}",
                    _gateway_argv(config),
                    port,
                    workdir,
                    ready_path="/_gateway/healthz",
                    discard_stdout=True,
                )
            )
            services.append(service)
            contenders.append(Contender(key, CONTENDERS[key], port, service, gateway=True))
        else:
            raise ValueError(f"unknown contender {key!r}")
    return contenders


def measure(
    workdir: Path,
    settings: Settings,
    keys: tuple[str, ...] = tuple(CONTENDERS),
    parts: tuple[str, ...] = ("idle", "latency", "stream"),
) -> dict[str, Any]:
    """Every WebSocket measurement; the results as ``ws_report`` reads them."""
    files = raise_open_files_limit(2 * settings.idle_connections + 1024)
    cookie = session_cookie()
    rounds = settings.idle_rounds if "idle" in parts else 0
    ports = iter(free_ports(1 + len(keys) * (rounds + 1)))
    upstream_port = next(ports)
    services: list[Service] = []
    version = nginx_version()
    results: dict[str, Any] = {
        "settings": {
            **dataclasses.asdict(settings),
            "message_size": _MESSAGE,
            "open_files_limit": files,
        },
        "load_average": {"start": _load_average()},
        "contenders": [
            {"key": key, "label": CONTENDERS[key], "setup": contender_notes(version)[key]}
            for key in keys
        ],
    }
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(
            Service(
                "ws-upstream",
                [sys.executable, str(BENCH / "ws_upstream.py"), "--port", str(upstream_port)],
                upstream_port,
                workdir,
            )
        )
        services.append(upstream)
        try:
            if "idle" in parts:
                results["idle"] = idle_rounds(
                    settings, ports, upstream_port, workdir, list(keys), cookie, services
                )
            if "latency" in parts or "stream" in parts:
                with contextlib.ExitStack() as inner:
                    main_keys = [k for k in keys if "stream" in parts or k not in REFERENCES]
                    contenders = start_contenders(
                        inner, ports, upstream_port, workdir, main_keys, "main", services
                    )
                    latency_and_stream(
                        settings,
                        contenders,
                        cookie,
                        results,
                        latency="latency" in parts,
                        streams="stream" in parts,
                    )
        except Exception:
            for service in services:
                print(f"--- {service.name} log (last lines) ---\n{service.log_tail()}")
            raise
    results["log_problems"] = {s.name: s.problems() for s in services if s.problems()}
    results["load_average"]["end"] = _load_average()
    return results


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages: other load on a shared machine shows here."""
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def nginx_version() -> str:
    done = subprocess.run(
        [nginx_binary() or "nginx", "-v"], capture_output=True, text=True, check=False
    )
    return (done.stdout + done.stderr).strip().split("/", 1)[-1]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, one round each")
    parser.add_argument("--idle", type=int, help="idle WebSockets opened at once")
    parser.add_argument("--idle-rounds", type=int)
    parser.add_argument("--latency-connections", type=int, help="open during the echo test")
    parser.add_argument("--samples", type=int, help="echo round trips per contender")
    parser.add_argument("--latency-rounds", type=int)
    parser.add_argument("--stream-mib", type=int, help="size of the large stream")
    parser.add_argument("--stream-rounds", type=int)
    parser.add_argument(
        "--only", nargs="+", choices=("idle", "latency", "stream"), help="these parts only"
    )
    parser.add_argument(
        "--contenders", nargs="+", choices=tuple(CONTENDERS), default=list(CONTENDERS)
    )
    args = parser.parse_args()
    settings = dataclasses.replace(QUICK if args.quick else Settings())
    for name, value in (
        ("idle_connections", args.idle),
        ("idle_rounds", args.idle_rounds),
        ("latency_connections", args.latency_connections),
        ("latency_samples", args.samples),
        ("latency_rounds", args.latency_rounds),
        ("stream_size", args.stream_mib and args.stream_mib * MIB),
        ("stream_rounds", args.stream_rounds),
    ):
        if value:
            setattr(settings, name, value)

    signal.signal(signal.SIGTERM, _terminate)
    ensure_system_packages()
    workdir = Path(tempfile.mkdtemp(prefix="wechat-gateway-ws-bench-"))
    try:
        results = measure(
            workdir,
            settings,
            tuple(args.contenders),
            tuple(args.only or ("idle", "latency", "stream")),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    saved = RESULTS / f"websocket-{stamp}.json"
    saved.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"saved {saved}")
    print("\n".join(ws_report.summary(results)))
    for name, measured, ok in ws_report.targets(results):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {measured}")


if __name__ == "__main__":
    main()
