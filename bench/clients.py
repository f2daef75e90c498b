"""The load the benchmark applies: wrk for small GETs, Python clients for the rest.

The 1 GiB clients read and write in 1 MiB pieces from one preallocated buffer, so they
cost far less CPU than the servers they measure; every answer is checked (status, byte
count) so that a fast failure can never pass for a fast success.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_BUFFER = 1024 * 1024
_WRK_MARK = "BENCH-RESULT "
# Prints wrk's own summary as one JSON line: exact counts and percentiles in microseconds.
_WRK_REPORT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("MARK", _WRK_MARK)


@dataclass
class WrkRun:
    connections: int
    requests: int
    seconds: float
    bytes: int
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Transfer:
    direction: str
    size: int
    seconds: float
    rss_baseline: int
    rss_peak: int

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_baseline


@dataclass
class SlowUpstream:
    requests: int
    in_flight_at_probe: int
    probe_status: int
    probe_seconds: float
    succeeded: int
    all_done_seconds: float


def write_wrk_script(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(_WRK_REPORT, encoding="utf-8")
    return path


def wrk(
    url: str, connections: int, seconds: float, script: Path, headers: dict[str, str]
) -> WrkRun:
    threads = max(1, min(connections, os.cpu_count() or 1, 4))
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"]
    argv += ["--timeout", "10s", "-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.startswith(_WRK_MARK):
            data = json.loads(line[len(_WRK_MARK) :])
            return WrkRun(
                connections=connections,
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                bytes=data["bytes"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors=data["errors"],
            )
    raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")


def get(port: int, path: str, headers: dict[str, str], timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def download(port: int, size: int, headers: dict[str, str]) -> float:
    """Seconds to GET ``size`` bytes from ``/download/<size>``, reading every byte."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    buffer = memoryview(bytearray(_BUFFER))
    try:
        started = time.perf_counter()
        conn.request("GET", f"/download/{size}", headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"download answered {response.status}: {response.read(200)!r}")
        received = 0
        while count := response.readinto(buffer):
            received += count
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if received != size:
        raise RuntimeError(f"download received {received} bytes of {size}")
    return elapsed


def upload(port: int, size: int, headers: dict[str, str]) -> float:
    """Seconds to POST ``size`` bytes (Content-Length framed) to ``/upload`` and be answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    block = bytes(_BUFFER)
    try:
        started = time.perf_counter()
        conn.putrequest("POST", "/upload", skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        left = size
        while left:
            piece = block if left >= len(block) else block[:left]
            conn.send(piece)
            left -= len(piece)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200 or body.strip() != str(size).encode():
        raise RuntimeError(f"upload answered {response.status}: {body[:200]!r}")
    return elapsed


def slow_upstream(
    port: int,
    headers: dict[str, str],
    *,
    requests: int = 120,
    probe_after: float = 0.5,
) -> SlowUpstream:
    """Park ``requests`` on ``/slow/``, then time one fast GET while they are in flight."""
    statuses: list[int] = [0] * requests
    finished: list[float] = [0.0] * requests
    sent = threading.Semaphore(0)
    started = time.perf_counter()

    def one(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", f"/slow/{index}", headers=headers)
            sent.release()
            response = conn.getresponse()
            response.read()
            statuses[index] = response.status
        except OSError:
            sent.release()
        finally:
            finished[index] = time.perf_counter() - started
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(requests)]
    for thread in threads:
        thread.start()
    in_flight = 0
    while in_flight < requests and sent.acquire(timeout=max(0.0, probe_after - elapsed(started))):
        in_flight += 1
    time.sleep(max(0.0, probe_after - elapsed(started)))
    in_flight -= sum(1 for status in statuses if status)  # any already answered are not parked
    probe_started = time.perf_counter()
    probe_status, _ = get(port, "/hello", headers)
    probe_seconds = time.perf_counter() - probe_started
    for thread in threads:
        thread.join(timeout=60)
    return SlowUpstream(
        requests=requests,
        in_flight_at_probe=in_flight,
        probe_status=probe_status,
        probe_seconds=probe_seconds,
        succeeded=sum(1 for status in statuses if status == 200),
        all_done_seconds=max(finished),
    )


def elapsed(since: float) -> float:
    return time.perf_counter() - since
