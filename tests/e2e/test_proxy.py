"""Forwarding, end to end: the real ``wechat-gateway serve`` in front of real upstream sockets.

Every request goes over a raw client socket, so framing is seen exactly as sent, and carries
a valid session cookie. ``RawUpstream`` records what the upstream received byte for byte and
misbehaves on demand; ``StreamingUpstream`` is a real app for trickling and huge bodies.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.support import (
    GatewayProcess,
    HeaderLookup,
    base_config,
    free_port,
    session_cookie,
)
from tests.helpers.upstreams import Exchange, RawUpstream, StreamingUpstream, big_block

SESSION = f"wechat_gateway={session_cookie()}"
SPOOFED = ("spoof-openid-1", "spoof-openid-2", "spoof-union-3", "spoof-4", "spoof-5", "spoof-6")


# --- a raw HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Reply(HeaderLookup):
    status: int
    head: bytes
    headers: list[tuple[str, str]]
    body: bytes  # payload, de-chunked
    wire_body: bytes  # exactly as received
    complete: bool  # the framing said the body ended (False: the connection ended first)

    def json(self) -> dict[str, object]:
        assert (self.value("Content-Type") or "").startswith("application/json")
        result: dict[str, object] = json.loads(self.body)
        return result


class Client:
    """One connection to the gateway, written and read as raw bytes."""

    def __init__(self, port: int, timeout: float = 15) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, size: int) -> bytes:
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            if not self.fill():
                raise AssertionError(f"connection closed before a response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def reply(self, method: str = "GET") -> Reply:
        head = self.head()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        lowered = {n.lower(): v for n, v in headers}
        if method == "HEAD" or status in (204, 304) or status < 200:
            return Reply(status, head, headers, b"", b"", True)
        if lowered.get("transfer-encoding", "").lower() == "chunked":
            return self._chunked(status, head, headers)
        if "content-length" in lowered:
            size = int(lowered["content-length"])
            while len(self.buf) < size and self.fill():
                pass
            body = self._take(size)
            return Reply(status, head, headers, body, body, len(body) == size)
        while self.fill():
            pass
        body = self._take(len(self.buf))
        return Reply(status, head, headers, body, body, True)

    def _chunked(self, status: int, head: bytes, headers: list[tuple[str, str]]) -> Reply:
        wire: list[bytes] = []
        payload: list[bytes] = []
        while True:
            line = self._line()
            if line is None:
                break
            wire.append(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                trailer = self._line()
                if trailer is None:
                    break
                wire.append(trailer)
                return Reply(status, head, headers, b"".join(payload), b"".join(wire), True)
            while len(self.buf) < size + 2 and self.fill():
                pass
            data = self._take(size + 2)
            wire.append(data)
            payload.append(data[:size])
        wire.append(self._take(len(self.buf)))
        return Reply(status, head, headers, b"".join(payload), b"".join(wire), False)

    def closed(self, timeout: float = 5) -> bool:
        """Whether the gateway closes this connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while self.fill():
                pass
        except TimeoutError:
            return False
        return True


def build(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    *,
    host: str = "gateway.test",
    session: bool = True,
) -> bytes:
    """A request as bytes: Host and the session cookie first, then ``headers``, then body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    extra = list(headers or [])
    names = {name.lower() for name, _ in extra}
    if session:
        app_cookies = [value for name, value in extra if name.lower() == "cookie"]
        extra = [(name, value) for name, value in extra if name.lower() != "cookie"]
        lines.append("Cookie: " + "; ".join([*app_cookies, SESSION]))
    lines += [f"{name}: {value}" for name, value in extra]
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def fetch(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    **options: object,
) -> Reply:
    with Client(port) as client:
        client.send(build(method, target, headers, body, **options))  # type: ignore[arg-type]
        return client.reply(method)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def echoed_head(reply: Reply) -> bytes:
    """The request head the default upstream handler echoed back."""
    assert reply.status == 200, reply.head
    return reply.body.split(b"\r\n\r\n", 1)[0]


# --- fixtures ------------------------------------------------------------------------------


class Listener:
    """A port that accepts and counts connections: a proxy the gateway must never use."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()


@pytest.fixture(scope="module")
def api() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def api_v2() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def idle() -> Iterator[RawUpstream]:
    """An upstream that closes keep-alive connections after 0.5 s idle, without warning."""
    upstream = RawUpstream()
    upstream.idle_close = 0.5
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def streaming() -> Iterator[StreamingUpstream]:
    upstream = StreamingUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def dead_proxy() -> Listener:
    return Listener()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    raw: RawUpstream,
    api: RawUpstream,
    api_v2: RawUpstream,
    idle: RawUpstream,
    streaming: StreamingUpstream,
    dead_proxy: Listener,
) -> Iterator[GatewayProcess]:
    """The default configuration (2 gevent workers), with proxy variables set to a trap."""
    port = free_port()
    config = base_config(
        port,
        raw.url,
        upstreams=[
            {"prefix": "/", "url": raw.url, "timeout": 5},
            {"prefix": "/api", "url": api.url, "timeout": 5},
            {"prefix": "/api/v2", "url": api_v2.url, "timeout": 5},
            {"prefix": "/stall", "url": raw.url, "timeout": 1},
            {"prefix": "/refused", "url": f"http://127.0.0.1:{free_port()}"},  # nothing listens
            {"prefix": "/idle", "url": idle.url},
            {"prefix": "/stream", "url": streaming.url},
        ],
        access={"public": ["/public/"]},
    )
    trap = f"http://127.0.0.1:{dead_proxy.port}"
    env = {
        "HTTP_PROXY": trap,
        "http_proxy": trap,
        "HTTPS_PROXY": trap,
        "https_proxy": trap,
        "ALL_PROXY": trap,
        "NO_PROXY": "example.invalid",
        "no_proxy": "example.invalid",
    }
    with GatewayProcess(config, tmp_path_factory.mktemp("gateway"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, raw: RawUpstream) -> Iterator[int]:
    """A gateway with ``server.max_body_size: 1024``."""
    port = free_port()
    config = base_config(port, raw.url, server={"max_body_size": 1024})
    with GatewayProcess(config, tmp_path_factory.mktemp("limited")) as process:
        yield process.port


@pytest.fixture
def port(gateway: GatewayProcess) -> int:
    return gateway.port


# --- upstream choice and timeouts ----------------------------------------------------------


def test_longest_prefix_wins(
    port: int, raw: RawUpstream, api: RawUpstream, api_v2: RawUpstream
) -> None:
    cases = {
        "/api/v2/users": api_v2,
        "/api/v2": api_v2,
        "/api/v2x": api,
        "/api/users": api,
        "/api": api,
        "/apix": raw,
        "/": raw,
        "/other/api/v2": raw,
    }
    for path, expected in cases.items():
        target = f"{path}?case=prefix"
        reply = fetch(port, "GET", target)
        assert echoed_head(reply).split(b"\r\n", 1)[0] == f"GET {target} HTTP/1.1".encode()
        for upstream in (raw, api, api_v2):
            seen = [s for s in upstream.requests_to(path) if s.target == target]
            assert len(seen) == (1 if upstream is expected else 0), (path, upstream.url)


def test_no_response_headers_within_timeout_is_504(port: int, raw: RawUpstream) -> None:
    released: list[float | None] = []
    raw.route("/stall/headers", lambda ex: released.append(ex.wait_for_close(10)))
    start = time.monotonic()
    reply = fetch(port, "GET", "/stall/headers", [("Accept", "application/json")])
    elapsed = time.monotonic() - start
    assert reply.status == 504
    assert reply.json()["error"] == "Gateway timeout"
    assert 0.9 <= elapsed <= 3.0, elapsed
    deadline = time.monotonic() + 5
    while not released and time.monotonic() < deadline:
        time.sleep(0.05)
    assert released and released[0] is not None, "the stalled upstream connection was kept"


def test_trickling_response_head_is_504(port: int, raw: RawUpstream) -> None:
    """The timeout bounds the whole head, not each read: interim answers and slow lines too."""

    def trickle(ex: Exchange) -> None:
        with contextlib.suppress(OSError):
            ex.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            ex.send(b"HTTP/1.1 200 OK\r\n")
            for _ in range(10):
                time.sleep(0.3)
                ex.send(b"X-Slow: line\r\n")
            ex.send(b"Content-Length: 2\r\n\r\nok")
        ex.close = True

    raw.route("/stall/trickle", trickle)
    start = time.monotonic()
    reply = fetch(port, "GET", "/stall/trickle")
    elapsed = time.monotonic() - start
    assert reply.status == 504
    assert 0.9 <= elapsed <= 2.5, elapsed


def test_a_timeout_is_whole_after_timeouts_and_answers_before_it(
    port: int, raw: RawUpstream
) -> None:
    """Every exchange has its whole timeout, whatever the worker did before: a timer used
    again would not (libev counts a stopped timer's time down; one that fired would fire at
    once). Four stalls on two workers: one worker has at least two, after an answer or a
    timeout."""
    raw.route("/stall/again", lambda ex: ex.wait_for_close(10))
    raw.route("/stall/answered", lambda ex: ex.reply(b"ok"))
    for path in ["/answered", "/again", "/answered", "/again", "/again", "/answered", "/again"]:
        start = time.monotonic()
        reply = fetch(port, "GET", "/stall" + path, [("Accept", "application/json")])
        elapsed = time.monotonic() - start
        if path == "/answered":
            assert reply.status == 200 and reply.body == b"ok"
        else:
            assert reply.status == 504
            assert 0.9 <= elapsed <= 3.0, elapsed


# --- bodies stream both ways -----------------------------------------------------------------


@pytest.mark.parametrize("size", [10_000, 300_000])
def test_content_length_upload_arrives_exactly(port: int, raw: RawUpstream, size: int) -> None:
    body = os.urandom(size)
    path = f"/upload/cl/{size}"
    reply = fetch(port, "POST", path, [("Content-Type", "application/octet-stream")], body)
    assert reply.status == 200
    seen = raw.only(path)
    assert seen.value("Content-Length") == str(size)
    assert seen.value("Transfer-Encoding") is None
    assert seen.value("Content-Type") == "application/octet-stream"
    assert seen.wire_body == body


def test_chunked_upload_stays_chunked(port: int, raw: RawUpstream) -> None:
    pieces = [b"a", os.urandom(1000), os.urandom(70_000), b"", b"z" * 5]
    wire = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    path = "/upload/chunked"
    reply = fetch(port, "POST", path, [("Transfer-Encoding", "chunked")], wire)
    assert reply.status == 200
    seen = raw.only(path)
    assert seen.values("Transfer-Encoding") == ["chunked"]
    assert seen.value("Content-Length") is None
    assert seen.body == b"".join(pieces)
    assert seen.wire_body.endswith(b"\r\n0\r\n\r\n")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upload_is_forwarded_before_it_ends(port: int, raw: RawUpstream, framing: str) -> None:
    """The upstream gets the first part of a body while the client still holds the rest."""
    first, rest = os.urandom(200_000), os.urandom(100_000)
    path = f"/upload/progressive/{framing}"
    if framing == "chunked":
        header = ("Transfer-Encoding", "chunked")
        part1, part2 = b"%x\r\n%b\r\n" % (len(first), first), chunked(rest)
    else:
        header = ("Content-Length", str(len(first) + len(rest)))
        part1, part2 = first, rest
    with Client(port) as client:
        before = raw.received
        client.send(build("POST", path, [header]) + part1)
        # The server's wsgi.input reads whole 64 KiB pieces, so at most that much waits.
        wanted = len(first) - 65536
        deadline = time.monotonic() + 5
        while raw.received - before < wanted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert raw.received - before >= wanted, "the gateway held the body back"
        assert not raw.requests_to(path)
        client.send(part2)
        assert client.reply("POST").status == 200
    assert raw.only(path).body == first + rest


def test_expect_100_continue(port: int, raw: RawUpstream) -> None:
    path = "/upload/expect"
    with Client(port) as client:
        client.send(build("PUT", path, [("Expect", "100-continue"), ("Content-Length", "5")]))
        interim = client.head()
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        assert not raw.requests_to(path)
        client.send(b"hello")
        reply = client.reply("PUT")
    assert reply.status == 200
    seen = raw.only(path)
    assert seen.body == b"hello"
    assert seen.value("Expect") is None
    assert seen.value("Content-Length") == "5"


def test_trickling_response_reaches_the_client_at_once(
    port: int, streaming: StreamingUpstream
) -> None:
    with Client(port) as client:
        client.send(build("GET", "/stream/events", [("Accept", "text/event-stream")]))
        head = client.head()
        assert head.startswith(b"HTTP/1.1 200 ")
        while b"data: first\n\n" not in client.buf:
            assert client.fill(), "the stream ended early"
        assert streaming.second_event_at is None, "first event arrived only with the second"
        client.buf = head + b"\r\n\r\n" + client.buf
        reply = client.reply()
    assert reply.complete
    assert reply.body == b"data: first\n\ndata: second\n\n"
    assert reply.value("Content-Type") == "text/event-stream"


def test_a_small_sized_answer_that_trickles_reaches_the_client_as_it_comes(
    port: int, raw: RawUpstream
) -> None:
    rest_sent = threading.Event()
    first_seen = threading.Event()

    def trickle(ex: Exchange) -> None:
        ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        first_seen.wait(5)  # the rest only once the client has the first half
        rest_sent.set()
        ex.send(b"world")

    raw.route("/trickle/small", trickle)
    with Client(port, timeout=5) as client:
        client.send(build("GET", "/trickle/small"))
        head = client.head()
        while b"hello" not in client.buf:
            assert client.fill(), "the answer ended early"
        assert not rest_sent.is_set(), "the first half arrived only with the second"
        first_seen.set()
        client.buf = head + b"\r\n\r\n" + client.buf
        reply = client.reply()
    assert reply.status == 200
    assert reply.body == b"helloworld"


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def rss_growth(gateway: GatewayProcess) -> Iterator[dict[str, int]]:
    """The largest growth of any worker's RSS while the block runs, sampled every 20 ms."""
    assert gateway.process is not None
    workers = _worker_pids(gateway.process.pid)
    assert len(workers) == 2
    base = {pid: _rss(pid) for pid in workers}
    peak = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            for pid in workers:
                peak[pid] = max(peak[pid], _rss(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    result: dict[str, int] = {}
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result["growth"] = max(peak[pid] - base[pid] for pid in workers)


@pytest.mark.slow
def test_large_download_streams_in_bounded_memory(gateway: GatewayProcess) -> None:
    mib = 200
    expected = hashlib.sha256()
    for index in range(mib):
        expected.update(big_block(index))
    digest = hashlib.sha256()
    size = 0
    with rss_growth(gateway) as memory, Client(gateway.port) as client:
        client.send(build("GET", f"/stream/big?mib={mib}"))
        head = client.head()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"\r\nContent-Length: {mib << 20}".encode() in head
        data, client.buf = client.buf, b""
        while True:
            digest.update(data)
            size += len(data)
            if size >= mib << 20:
                break
            data = client.sock.recv(1 << 20)
            assert data, f"connection ended after {size} bytes"
    assert size == mib << 20
    assert digest.hexdigest() == expected.hexdigest()
    assert memory["growth"] < 64 << 20, f"a worker grew by {memory['growth'] >> 20} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_upload_streams_in_bounded_memory(gateway: GatewayProcess, framing: str) -> None:
    mib = 100
    expected = hashlib.sha256()
    with rss_growth(gateway) as memory, Client(gateway.port, timeout=60) as client:
        if framing == "chunked":
            client.send(build("POST", "/stream/upload", [("Transfer-Encoding", "chunked")]))
        else:
            client.send(build("POST", "/stream/upload", [("Content-Length", str(mib << 20))]))
        for index in range(mib):
            block = big_block(index)
            expected.update(block)
            client.send(b"%x\r\n%b\r\n" % (len(block), block) if framing == "chunked" else block)
        if framing == "chunked":
            client.send(b"0\r\n\r\n")
        reply = client.reply("POST")
    assert reply.status == 200
    report = reply.json()
    assert report["size"] == mib << 20
    assert report["sha256"] == expected.hexdigest()
    if framing == "chunked":
        assert report["transfer_encoding"] == "chunked"
        assert report["content_length"] in (None, "")
    else:
        assert report["content_length"] == str(mib << 20)
        assert report["transfer_encoding"] is None
    assert memory["growth"] < 64 << 20, f"a worker grew by {memory['growth'] >> 20} MiB"


# --- what the upstream receives --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"])
def test_method_is_forwarded(port: int, raw: RawUpstream, method: str) -> None:
    path = f"/method/{method}"
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    reply = fetch(port, method, path, body=body)
    assert reply.status == 200
    seen = raw.only(path)
    assert seen.request_line == f"{method} {path} HTTP/1.1".encode()
    assert seen.body == (body or b"")


@pytest.mark.parametrize(
    "target",
    [
        "/a%2Fb/c%20d?x=%2F&y=1+2",
        "/%E4%BD%A0%e5%a5%bd/;param=1/%25?q=%25%2B+&&empty=&=x",
        "/path/./../dots//double?",
        "/odd/'quote'/(paren)/*star*/~tilde/!bang/$dollar/@at/:colon",
    ],
)
def test_raw_path_and_query_byte_for_byte(port: int, raw: RawUpstream, target: str) -> None:
    reply = fetch(port, "GET", target)
    assert echoed_head(reply).split(b"\r\n", 1)[0] == f"GET {target} HTTP/1.1".encode()


def test_http10_client_without_host(port: int, raw: RawUpstream) -> None:
    with Client(port) as client:
        client.send(f"GET /http10 HTTP/1.0\r\nCookie: {SESSION}\r\n\r\n".encode())
        reply = client.reply()
    assert reply.head.startswith(b"HTTP/1.0 200 ")
    seen = raw.only("/http10")
    assert seen.request_line == b"GET /http10 HTTP/1.1"
    assert seen.values("Host") == [f"127.0.0.1:{port}"]  # the public host: HTTP/1.1 needs one
    assert seen.values("X-Forwarded-Host") == [f"127.0.0.1:{port}"]


def test_host_and_forwarded_headers(port: int, raw: RawUpstream) -> None:
    path = "/forwarded"
    headers = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ]
    reply = fetch(port, "GET", path, headers, host="app.example.com:8443")
    assert reply.status == 200
    seen = raw.only(path)
    assert seen.values("Host") == ["app.example.com:8443"]
    assert seen.values("X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    assert seen.values("X-Forwarded-Host") == ["app.example.com:8443"]
    assert b"evil.example" not in seen.head

    fetch(port, "GET", "/forwarded/plain")
    plain = raw.only("/forwarded/plain")
    assert plain.values("X-Forwarded-For") == ["127.0.0.1"]
    assert plain.values("Host") == ["gateway.test"]


def test_a_forwarded_for_named_in_connection_is_not_forwarded(port: int, raw: RawUpstream) -> None:
    headers = [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "5.5.5.5")]
    fetch(port, "GET", "/forwarded/hop", headers)
    seen = raw.only("/forwarded/hop")
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert b"5.5.5.5" not in seen.head


def test_hop_by_hop_request_headers_are_removed(port: int, raw: RawUpstream) -> None:
    path = "/hop/request"
    headers = [
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Upgrade", "websocket"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("X-Secret-Hop", "for-the-gateway-only"),
        ("X-End-To-End", "kept"),
        ("Trailer", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
    ]
    reply = fetch(port, "POST", path, headers, chunked(b"abc"))
    assert reply.status == 200
    seen = raw.only(path)
    names = {name.lower() for name, _ in seen.headers}
    for hop in ("connection", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert hop not in names
    assert "proxy-authorization" not in names
    assert "x-secret-hop" not in names
    assert b"for-the-gateway-only" not in seen.head
    assert seen.values("Transfer-Encoding") == ["chunked"]
    assert seen.values("X-End-To-End") == ["kept"]
    assert seen.values("Trailer") == ["X-Checksum"]  # end-to-end in RFC 9110


def test_hop_by_hop_response_headers_are_removed(port: int, raw: RawUpstream) -> None:
    def hop_response(ex: Exchange) -> None:
        ex.send(
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: X-Secret-Hop, Keep-Alive\r\n"
            b"Keep-Alive: timeout=5, max=100\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\n"
            b"Upgrade: h2c\r\n"
            b"Proxy-Authenticate: Basic realm=upstream\r\n"
            b"X-Secret-Hop: internal\r\n"
            b"X-End-To-End: kept\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"\r\n" + chunked(b"hello ", b"world")
        )

    raw.route("/hop/response", hop_response)
    for method in ("GET", "HEAD"):
        reply = fetch(port, method, "/hop/response")
        assert reply.status == 200
        names = [name.lower() for name, _ in reply.headers]
        for hop in ("keep-alive", "proxy-connection", "te", "upgrade", "proxy-authenticate"):
            assert hop not in names, hop
        assert "x-secret-hop" not in names
        assert reply.values("Connection") == ["keep-alive"]  # the gateway's own hop
        assert reply.values("X-End-To-End") == ["kept"]
        if method == "GET":
            assert reply.values("Transfer-Encoding") == ["chunked"]  # re-framed at this hop
            assert reply.body == b"hello world"


@pytest.mark.parametrize("path", ["/identity/spoof", "/public/identity/spoof"])
@pytest.mark.parametrize("session", [True, False])
def test_client_identity_headers_never_reach_the_upstream(
    port: int, raw: RawUpstream, path: str, session: bool
) -> None:
    headers = [
        ("X-WeChat-OpenID", SPOOFED[0]),
        ("x-wechat-openid", SPOOFED[1]),
        ("X-WECHAT-UNIONID", SPOOFED[2]),
        ("X_WeChat_OpenID", SPOOFED[3]),
        ("X-Wechat_Nickname", SPOOFED[4]),
        ("x-wechat-anything", SPOOFED[5]),
        ("X-WeChatNot-Identity", "kept"),
    ]
    path = f"{path}/{int(session)}"
    reply = fetch(port, "GET", path, headers, session=session)
    if not session and not path.startswith("/public/"):
        assert reply.status == 302  # a login, and nothing forwarded
        assert not raw.requests_to(path)
        return
    assert reply.status == 200
    seen = raw.only(path)
    for value in SPOOFED:
        assert value.encode() not in seen.head
    names = [line.split(b":", 1)[0] for line in seen.head.split(b"\r\n")[1:]]
    assert not [name for name in names if b"_" in name]
    assert seen.values("X-WeChatNot-Identity") == ["kept"]
    if session:  # the gateway's own identity, once
        assert seen.values("X-WeChat-OpenID") == ["oTestOpenID0000000000000001"]
        assert seen.values("X-WeChat-UnionID") == ["uTestUnionID000000000000001"]
        assert seen.values("X-WeChat-Nickname") == ["Tester"]
    else:
        assert not [name for name in names if name.lower().startswith(b"x-wechat-")]


def test_gateway_cookie_is_removed_and_app_cookies_stay(port: int, raw: RawUpstream) -> None:
    fetch(port, "GET", "/cookies/mixed", [("Cookie", "app=1; theme=dark")])
    assert raw.only("/cookies/mixed").values("Cookie") == ["app=1; theme=dark"]

    fetch(port, "GET", "/cookies/only-gateway")
    seen = raw.only("/cookies/only-gateway")
    assert seen.values("Cookie") == []
    assert b"wechat_gateway" not in seen.head

    fetch(port, "GET", "/public/cookies", [("Cookie", "app=1")])
    assert raw.only("/public/cookies").values("Cookie") == ["app=1"]

    # Two Cookie lines: the server joins repeated fields with a comma.
    request = build("GET", "/public/cookies/two-lines", [("Cookie", "app=2")], session=False)
    request = request.replace(b"\r\n\r\n", f"\r\nCookie: {SESSION}\r\n\r\n".encode(), 1)
    with Client(port) as client:
        client.send(request)
        assert client.reply().status == 200
    seen = raw.only("/public/cookies/two-lines")
    assert b"wechat_gateway" not in seen.head
    assert seen.values("Cookie") == ["app=2"]


def test_only_what_the_client_sent(port: int, raw: RawUpstream) -> None:
    """No User-Agent, Accept-Encoding or anything else the client did not send."""
    fetch(port, "GET", "/bare")
    seen = raw.only("/bare")
    names = {name.lower() for name, _ in seen.headers if not name.lower().startswith("x-wechat-")}
    # X-Request-ID is the gateway's own (tests/e2e/test_logs.py), sent with every request.
    assert names == {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    }


def test_proxy_environment_is_ignored(port: int, dead_proxy: Listener, raw: RawUpstream) -> None:
    assert fetch(port, "GET", "/no-proxy").status == 200
    assert raw.only("/no-proxy")
    assert dead_proxy.accepted == 0


def test_nothing_leaks_between_users(port: int, raw: RawUpstream) -> None:
    raw.route(
        "/users/login",
        lambda ex: ex.reply(
            b"welcome",
            headers=[("Set-Cookie", "app_session=user-a-secret; Path=/; HttpOnly")],
        ),
    )
    reply = fetch(port, "GET", "/users/login")
    assert reply.values("Set-Cookie") == ["app_session=user-a-secret; Path=/; HttpOnly"]
    user_b = f"wechat_gateway={session_cookie('oUserB00000000000000000000B', unionid=None)}"
    for _ in range(4):  # both workers, pooled and fresh connections
        request = build("GET", "/users/b", session=False)
        request = request.replace(b"\r\n\r\n", f"\r\nCookie: {user_b}\r\n\r\n".encode(), 1)
        with Client(port) as client:
            client.send(request)
            assert client.reply().status == 200
    for seen in raw.requests_to("/users/b"):
        assert b"user-a-secret" not in seen.head
        assert seen.values("Cookie") == []


# --- what the client receives ----------------------------------------------------------------


def test_control_characters_in_response_heads_are_neutralised(port: int, raw: RawUpstream) -> None:
    raw.route(
        "/controls",
        lambda ex: ex.send(
            b"HTTP/1.1 200 All\x07Good\r\n"
            b"X-Bell: a\x01b\x7fc\td\r\n"
            b"X-Split: one\nX-Injected: yes\r\n"
            b"X-Folded: first\r\n \x00second\r\n"
            b"Content-Length: 2\r\n\r\nok"
        ),
    )
    reply = fetch(port, "GET", "/controls")
    assert reply.head.startswith(b"HTTP/1.1 200 All Good\r\n")
    assert reply.values("X-Bell") == ["a b c\td"]
    assert reply.values("X-Split") == ["one X-Injected: yes"]
    assert reply.values("X-Injected") == []
    assert reply.values("X-Folded") == ["first second"]
    assert reply.body == b"ok"

    raw.route("/controls/name", lambda ex: ex.send(b"HTTP/1.1 200 OK\r\nX\x01Y: z\r\n\r\n"))
    assert fetch(port, "GET", "/controls/name").status == 502


def test_compressed_body_passes_through(port: int, raw: RawUpstream) -> None:
    compressed = gzip.compress(b"hello, compressed world\n" * 500)
    raw.route(
        "/gzip",
        lambda ex: ex.reply(
            compressed,
            headers=[
                ("Content-Type", "text/plain"),
                ("Content-Encoding", "gzip"),
                ("Vary", "Accept-Encoding"),
            ],
        ),
    )
    reply = fetch(port, "GET", "/gzip", [("Accept-Encoding", "gzip, br;q=0.5")])
    assert reply.status == 200
    assert reply.values("Content-Encoding") == ["gzip"]
    assert reply.value("Content-Length") == str(len(compressed))
    assert reply.body == compressed
    assert raw.only("/gzip").values("Accept-Encoding") == ["gzip, br;q=0.5"]


@pytest.mark.parametrize("size", [10, 100_000])
def test_set_cookie_headers_stay_apart_and_in_order(port: int, raw: RawUpstream, size: int) -> None:
    cookies = [
        "a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        "b=2; Path=/app; HttpOnly",
        "c=3; SameSite=Lax",
    ]
    raw.route(
        f"/cookies/set/{size}",
        lambda ex: ex.reply(b"x" * size, headers=[("Set-Cookie", c) for c in cookies]),
    )
    reply = fetch(port, "GET", f"/cookies/set/{size}")
    assert reply.values("Set-Cookie") == cookies
    lines = [line for line in reply.head.split(b"\r\n") if line.lower().startswith(b"set-cookie")]
    assert lines == [f"Set-Cookie: {c}".encode() for c in cookies]
    assert len(reply.body) == size


@pytest.mark.parametrize("size", [10, 100_000])
def test_the_upstreams_server_and_date_reach_the_client(
    port: int, raw: RawUpstream, size: int
) -> None:
    fields = [("Server", "legacy-app/2.1 (Unix)"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")]
    raw.route(f"/server-date/{size}", lambda ex: ex.reply(b"x" * size, headers=fields))
    reply = fetch(port, "GET", f"/server-date/{size}")
    assert reply.values("Server") == ["legacy-app/2.1 (Unix)"]
    assert reply.values("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    assert len(reply.body) == size


@pytest.mark.parametrize("coding", ["gzip, chunked", "gzip", "deflate, chunked"])
def test_a_transfer_coding_other_than_chunked_is_a_clean_502(
    port: int, raw: RawUpstream, coding: str
) -> None:
    """Not undone, it would reach the browser as compressed bytes nobody labelled."""
    body = gzip.compress(b"hello")
    framed = chunked(body) if coding.endswith("chunked") else body

    def answer(ex: Exchange) -> None:
        ex.send(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode() + framed)
        ex.close = True

    raw.route("/coding", answer)
    reply = fetch(port, "GET", "/coding", [("Accept", "application/json")])
    assert reply.status == 502
    assert reply.json()["error"] == "Bad gateway"


def test_the_gateways_own_pages_carry_a_date(port: int) -> None:
    reply = fetch(port, "GET", "/_gateway/healthz")
    assert len(reply.values("Date")) == 1
    assert reply.values("Server") == ["gunicorn"]


def test_location_rewriting(port: int, raw: RawUpstream) -> None:
    upstream = f"http://127.0.0.1:{raw.port}"
    public = f"http://127.0.0.1:{port}"
    cases = {
        f"{upstream}/next?a=1": f"{public}/next?a=1",
        f"{upstream}": f"{public}/",
        f"{upstream}?q=1": f"{public}/?q=1",
        f"HTTP://127.0.0.1:{raw.port}/case": f"{public}/case",
        "https://other.example.com/next?a=1": "https://other.example.com/next?a=1",
        f"{upstream}9/longer-port": f"{upstream}9/longer-port",
        f"{upstream}@evil.example/": f"{upstream}@evil.example/",
        "/relative?a=1": "/relative?a=1",
        "relative/path": "relative/path",
    }
    for index, (sent, expected) in enumerate(cases.items()):
        raw.route(
            f"/location/{index}",
            lambda ex, sent=sent: ex.reply(status="302 Found", headers=[("Location", sent)]),
        )
        reply = fetch(port, "GET", f"/location/{index}")
        assert reply.status == 302
        assert reply.values("Location") == [expected], sent


@pytest.mark.parametrize(
    ("headers", "representation"),
    [
        ([("Accept", "text/html,application/xhtml+xml")], "html"),
        ([("Accept", "application/json")], "json"),
        ([("Accept", "text/html"), ("X-Requested-With", "XMLHttpRequest")], "json"),
    ],
)
@pytest.mark.parametrize("failure", ["refused", "reset", "silent-close", "garbage"])
def test_unreachable_upstream_is_502(
    port: int,
    raw: RawUpstream,
    headers: list[tuple[str, str]],
    representation: str,
    failure: str,
) -> None:
    raw.route("/fail/reset", lambda ex: ex.reset())
    raw.route("/fail/silent-close", lambda ex: setattr(ex, "close", True))

    def garbage(ex: Exchange) -> None:
        ex.send(b"this is not http\r\n\r\n")
        ex.close = True

    raw.route("/fail/garbage", garbage)
    path = "/refused/x" if failure == "refused" else f"/fail/{failure}"
    reply = fetch(port, "GET", path, headers)
    assert reply.status == 502
    assert reply.complete
    assert b"Traceback" not in reply.body
    if representation == "json":
        assert reply.json()["error"] == "Bad gateway"
    else:
        assert reply.value("Content-Type") == "text/html; charset=utf-8"
        assert b"Bad gateway" in reply.body
        assert reply.body.lstrip().lower().startswith(b"<!doctype html")


def test_non_get_failure_is_json(port: int) -> None:
    reply = fetch(port, "POST", "/refused/form", [("Accept", "text/html")], b"a=1")
    assert reply.status == 502
    assert reply.json()["error"] == "Bad gateway"


def _die_mid_body(ex: Exchange) -> None:
    size = int(ex.request.target.rsplit("/", 1)[1])
    ex.send(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * (size // 2))
    ex.close = True


@pytest.mark.parametrize("size", [10, 1000, 200_000])
def test_a_body_cut_short_aborts_the_connection(port: int, raw: RawUpstream, size: int) -> None:
    raw.route("/die/length", _die_mid_body)
    # A short timeout: the abort must come at once, not when an idle keep-alive expires.
    with Client(port, timeout=2) as client:
        client.send(build("GET", f"/die/length/{size}"))
        reply = client.reply()
        assert reply.status == 200
        assert reply.value("Content-Length") == str(size)
        assert not reply.complete
        assert len(reply.body) < size
        assert client.eof


@pytest.mark.parametrize(
    "framing", ["Content-Length: 100", "Content-Length: 200000", "Transfer-Encoding: chunked"]
)
def test_an_answer_that_ends_right_after_its_head_is_a_clean_502(
    port: int, raw: RawUpstream, framing: str
) -> None:
    def die_before_the_body(ex: Exchange) -> None:
        ex.send(f"HTTP/1.1 200 OK\r\n{framing}\r\n\r\n".encode())
        ex.close = True

    raw.route("/die/head-only", die_before_the_body)
    reply = fetch(port, "GET", "/die/head-only", [("Accept", "application/json")])
    assert reply.status == 502
    assert reply.complete
    assert reply.json()["error"] == "Bad gateway"


@pytest.mark.parametrize("size", [500, 200_000])
def test_chunked_body_cut_short_has_no_last_chunk(port: int, raw: RawUpstream, size: int) -> None:
    def die_before_last_chunk(ex: Exchange) -> None:
        ex.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(b"y" * size)[: -len(b"0\r\n\r\n")]
        )
        ex.close = True

    raw.route("/die/chunked", die_before_last_chunk)
    with Client(port, timeout=2) as client:
        client.send(build("GET", f"/die/chunked/{size}"))
        reply = client.reply()
        assert reply.status == 200
        assert reply.values("Transfer-Encoding") == ["chunked"]
        assert not reply.complete
        assert not reply.wire_body.endswith(b"0\r\n\r\n")
        assert client.eof


def test_client_disconnect_releases_the_upstream(port: int, raw: RawUpstream) -> None:
    released = threading.Event()
    closed_at: list[float] = []

    def endless(ex: Exchange) -> None:
        ex.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        block = b"z" * 65536
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                ex.sock.sendall(block)
        except OSError:
            closed_at.append(time.monotonic())
            released.set()
        ex.close = True

    raw.route("/endless", endless)
    client = Client(port)
    client.send(build("GET", "/endless"))
    client.head()
    while len(client.buf) < 1 << 20:
        assert client.fill()
    client.sock.close()
    gone = time.monotonic()
    assert released.wait(5), "the upstream connection was not released"
    assert closed_at[0] - gone < 5


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_interim_responses_are_skipped(port: int, raw: RawUpstream, method: str) -> None:
    raw.route(
        "/interim",
        lambda ex: ex.send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
            + (b"final" if ex.request.method == "GET" else b"")
        ),
    )
    with Client(port) as client:
        for _ in range(2):  # and the connection stays usable
            client.send(build(method, "/interim"))
            reply = client.reply(method)
            assert reply.status == 200
            assert reply.value("Content-Length") == "5"
            assert reply.body == (b"final" if method == "GET" else b"")
        assert not client.buf


def test_head_keeps_the_length_of_the_get(port: int, raw: RawUpstream) -> None:
    raw.route(
        "/head",
        lambda ex: ex.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"
        ),
    )
    with Client(port) as client:
        client.send(build("HEAD", "/head"))
        reply = client.reply("HEAD")
        assert reply.status == 200
        assert reply.values("Content-Length") == ["1234"]
        client.send(build("GET", "/after-head"))
        assert client.reply().status == 200
        assert not client.buf
    assert raw.only("/head").method == "HEAD"


@pytest.mark.parametrize(
    ("status", "extra"),
    [("204 No Content", b""), ("304 Not Modified", b'ETag: "v1"\r\n')],
)
def test_bodiless_statuses(port: int, raw: RawUpstream, status: str, extra: bytes) -> None:
    path = f"/bodiless/{status[:3]}"
    raw.route(path, lambda ex: ex.send(f"HTTP/1.1 {status}\r\n".encode() + extra + b"\r\n"))
    with Client(port) as client:
        client.send(build("GET", path))
        reply = client.reply()
        assert reply.head.startswith(f"HTTP/1.1 {status}\r\n".encode())
        assert reply.values("Content-Length") == []
        assert reply.values("Transfer-Encoding") == []
        if extra:
            assert reply.values("ETag") == ['"v1"']
        client.send(build("GET", "/after-bodiless"))
        assert client.reply().status == 200
        assert not client.buf


def test_chunked_wins_over_content_length(port: int, raw: RawUpstream) -> None:
    raw.route(
        "/both-framings",
        lambda ex: ex.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(b"chunked ", b"body")
        ),
    )
    with Client(port) as client:
        client.send(build("GET", "/both-framings"))
        reply = client.reply()
        assert reply.status == 200
        assert reply.complete
        assert reply.body == b"chunked body"
        assert reply.values("Content-Length") == []
        client.send(build("GET", "/after-both-framings"))
        assert client.reply().status == 200
    # The upstream contradicted itself about framing: its connection is not reused.
    first = raw.only("/both-framings").connection
    assert raw.only("/after-both-framings").connection != first


# --- connection reuse ------------------------------------------------------------------------


def test_upstream_closing_after_each_response(port: int, raw: RawUpstream) -> None:
    def one_shot(ex: Exchange) -> None:
        ex.reply(b"once")
        ex.close = True

    raw.route("/one-shot", one_shot)
    with Client(port) as client:
        for index in range(30):
            method = ("GET", "HEAD", "DELETE")[index % 3]
            client.send(build(method, f"/one-shot/{index}"))
            reply = client.reply(method)
            assert reply.status == 200, (index, reply.body)
        # A streamed body cannot be replayed: the pooled connection must be found closed
        # before it is used (the upstream's FIN has long arrived after 50 ms).
        body = os.urandom(100_000)
        for index in range(3):
            time.sleep(0.05)
            client.send(build("POST", f"/one-shot/post/{index}", body=body))
            assert client.reply("POST").status == 200
    assert len(raw.requests_to("/one-shot/29")) == 1
    assert raw.only("/one-shot/post/2").body == body


def test_upstream_closing_idle_connections(port: int, idle: RawUpstream) -> None:
    with Client(port) as client:
        for index, pause in enumerate([0, 0.5, 0.45, 0.55, 0.5, 0.6]):
            time.sleep(pause)
            client.send(build("GET", f"/idle/{index}"))
            reply = client.reply()
            assert reply.status == 200, (index, reply.body)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/%zz", "/%", "/%4", "/a%2", "/ok%2Fthen%g0"])
def test_invalid_percent_encoding_is_400(port: int, raw: RawUpstream, path: str) -> None:
    reply = fetch(port, "GET", path, [("Accept", "application/json")])
    assert reply.status == 400
    assert reply.json()["error"] == "Bad request"
    assert not raw.requests_to(path)


@pytest.mark.parametrize(
    "request_bytes",
    [
        build("GET", "/" + "a" * 9000),
        build("GET", "/long-header", [("X-Big", "b" * 9000)]),
        build("GET", "/many-headers", [(f"X-H{i}", "v") for i in range(150)]),
    ],
    ids=["request-line", "header-size", "header-count"],
)
def test_oversized_requests_are_4xx(port: int, raw: RawUpstream, request_bytes: bytes) -> None:
    before = len(raw.seen)
    with Client(port) as client:
        client.send(request_bytes)
        reply = client.reply()
    assert 400 <= reply.status < 500
    assert len(raw.seen) == before


def test_body_over_max_body_size_is_413(limited: int, raw: RawUpstream) -> None:
    reply = fetch(limited, "POST", "/limit/cl", [("Accept", "application/json")], b"x" * 2000)
    assert reply.status == 413
    assert reply.json()["error"] == "Request too large"
    assert not raw.requests_to("/limit/cl")

    wire = chunked(b"x" * 1000, b"y" * 1000, b"z" * 1000)
    reply = fetch(limited, "POST", "/limit/chunked", [("Transfer-Encoding", "chunked")], wire)
    assert reply.status == 413
    assert not raw.requests_to("/limit/chunked")

    assert fetch(limited, "POST", "/limit/exact", body=b"x" * 1024).status == 200
    assert raw.only("/limit/exact").body == b"x" * 1024
    small = chunked(b"x" * 1000, b"y" * 24)
    reply = fetch(limited, "POST", "/limit/chunked-ok", [("Transfer-Encoding", "chunked")], small)
    assert reply.status == 200
    assert raw.only("/limit/chunked-ok").body == b"x" * 1000 + b"y" * 24


@pytest.mark.parametrize(
    "framing",
    [
        [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
        [("Content-Length", "3"), ("Content-Length", "4")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    ],
    ids=["cl-and-te", "two-lengths", "te-twice"],
)
def test_conflicting_framing_is_400(
    port: int, raw: RawUpstream, framing: list[tuple[str, str]]
) -> None:
    path = f"/smuggle/{len(raw.seen)}"
    reply = fetch(port, "POST", path, framing, b"abc\r\n")
    assert reply.status == 400
    assert not raw.requests_to(path)


# --- the gateway's own paths -----------------------------------------------------------------


def test_reserved_paths(port: int, raw: RawUpstream) -> None:
    reply = fetch(port, "GET", "/_gateway/healthz", session=False)
    assert (reply.status, reply.body) == (200, b"ok\n")
    reply = fetch(port, "GET", "/_gateway/readyz", session=False)
    assert reply.status == 200
    assert reply.json()["status"] == "ready"
    reply = fetch(port, "GET", "/_gateway/nope", [("Accept", "application/json")])
    assert reply.status == 404
    reply = fetch(port, "POST", "/_gateway/healthz", body=b"")
    assert reply.status == 405
    assert "GET" in (reply.value("Allow") or "")
    assert not [seen for seen in raw.seen if seen.target.startswith("/_gateway")]


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_slow_upstream_does_not_block_fast_paths(
    port: int, raw: RawUpstream, api: RawUpstream
) -> None:
    def hold(ex: Exchange) -> None:
        time.sleep(3)
        ex.reply(b"slow")

    raw.route("/hold", hold)
    statuses: list[int] = []

    def slow_request(index: int) -> None:
        statuses.append(fetch(port, "GET", f"/hold/{index}").status)

    start = time.monotonic()
    threads = [threading.Thread(target=slow_request, args=(i,)) for i in range(120)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while sum(1 for s in list(raw.seen) if s.target.startswith("/hold/")) < 120:
        assert time.monotonic() < deadline, "the slow requests did not all reach the upstream"
        time.sleep(0.02)
    fast_start = time.monotonic()
    reply = fetch(port, "GET", "/api/fast")
    fast = time.monotonic() - fast_start
    assert reply.status == 200
    for thread in threads:
        thread.join(15)
    elapsed = time.monotonic() - start
    assert fast < 0.5, f"the fast path took {fast:.2f}s"
    assert statuses == [200] * 120
    assert elapsed < 10, f"120 slow requests took {elapsed:.1f}s"


# --- and through all of the above -------------------------------------------------------------


def test_no_tracebacks_no_500s_no_leaks(
    gateway: GatewayProcess, raw: RawUpstream, api: RawUpstream, api_v2: RawUpstream
) -> None:
    """Over every request of this module: the session cookie and spoofed identities stayed."""
    for upstream in (raw, api, api_v2):
        for seen in upstream.seen:
            assert b"wechat_gateway=" not in seen.head, seen.head
            for value in SPOOFED:
                assert value.encode() not in seen.head
    log = gateway.log()
    assert "Traceback" not in log
    assert not re.search(r'HTTP/1\.[01]" 5(?!02|04)\d\d ', log), "a 5xx other than 502/504"
