"""``gateway.worker``: the default gunicorn worker, on the wire.

The wire tests run a plain ``gunicorn -k gateway.server.worker.GatewayWorker`` in front of the
small WSGI app below, so what is checked is the worker alone, byte for byte: framing, HEAD
and 204, HTTP/1.0, keep-alive, a body longer than its Content-Length, and an app that
fails before or after the head went out. The worker piece by piece is
``tests/unit/test_worker.py``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers.support import free_port, stop_process, wait_for_port

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROOT = Path(__file__).resolve().parents[2]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """What the wire tests talk to: the path picks the behaviour."""
    path = environ["PATH_INFO"]
    if path == "/one":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/pieces":
        start_response("200 OK", [("Content-Length", "6")])
        return iter([b"ab", b"cd", b"ef"])
    if path == "/unsized":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"abc", b"de"])
    if path == "/empty":
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    if path == "/long":
        start_response("200 OK", [("Content-Length", "3")])
        return [b"abcdef"]
    if path == "/nocontent":
        start_response("204 No Content", [])
        return [b"not sent"]
    if path == "/own-server":
        start_response(
            "200 OK",
            [
                ("Server", "upstream/1.0"),
                ("Date", "Mon, 01 Jan 2024 00:00:00 GMT "),
                ("Content-Length", "2"),
            ],
        )
        return [b"ok"]
    if path == "/fail-early":
        raise RuntimeError("before the head")
    if path == "/fail-late":
        start_response("200 OK", [("Content-Length", "10")])
        return _fail_after(b"12345", RuntimeError("after the head"))
    if path == "/exit-late":  # how gunicorn aborts a request that ran out of time
        start_response("200 OK", [("Content-Length", "10")])
        return _fail_after(b"12345", SystemExit(1))
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def _fail_after(first: bytes, error: BaseException) -> Iterator[bytes]:
    yield first
    raise error


@contextmanager
def gunicorn(*options: str) -> Iterator[int]:
    """``gunicorn -k gateway.server.worker.GatewayWorker`` serving ``app``, on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gateway.server.worker.GatewayWorker",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            *options,
            "tests.e2e.test_worker:app",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        stop_process(process, signal.SIGTERM, timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with gunicorn("--keep-alive", "10") as port:
        yield port


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes; a server that keeps the connection
    open past 3 s fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(request)
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            received += data


def kept_open(port: int, request: bytes) -> bytes:
    """Send raw bytes; what arrived while the connection stayed open for 0.5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        sock.settimeout(0.5)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return received
            if not data:
                raise AssertionError(f"the server closed the connection after {received!r}")
            received += data


def split(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, body


def get(path: str, *, version: str = "1.1", method: str = "GET", close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{connection}\r\n".encode()


def test_a_one_piece_body(server: int) -> None:
    status, headers, body = split(exchange(server, get("/one")))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "5"
    assert headers["content-type"] == "text/plain"
    assert headers["connection"] == "close"
    assert headers["server"] == "gunicorn"
    assert body == b"hello"


def test_the_date_header_is_an_http_date_of_now(server: int) -> None:
    _, headers, _ = split(exchange(server, get("/one")))
    assert re.fullmatch(
        r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", headers["date"]
    )
    assert abs(parsedate_to_datetime(headers["date"]).timestamp() - time.time()) < 3


def test_the_apps_own_server_and_date_are_kept(server: int) -> None:
    head, _, body = exchange(server, get("/own-server")).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert [line for line in lines if line.lower().startswith((b"server:", b"date:"))] == [
        b"Server: upstream/1.0",
        b"Date: Mon, 01 Jan 2024 00:00:00 GMT",
    ]
    assert b"Content-Length: 2" in lines
    assert body == b"ok"


def test_a_body_in_pieces(server: int) -> None:
    status, headers, body = split(exchange(server, get("/pieces")))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "6"
    assert body == b"abcdef"


def test_an_unsized_body_is_chunked_for_http11(server: int) -> None:
    _, headers, body = split(exchange(server, get("/unsized")))
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def test_an_unsized_body_ends_with_the_connection_for_http10(server: int) -> None:
    status, headers, body = split(exchange(server, get("/unsized", version="1.0", close=False)))
    assert status == "HTTP/1.0 200 OK"
    assert "transfer-encoding" not in headers
    assert headers["connection"] == "close"
    assert body == b"abcde"


def test_a_body_longer_than_its_content_length_is_cut(server: int) -> None:
    _, headers, body = split(exchange(server, get("/long")))
    assert headers["content-length"] == "3"
    assert body == b"abc"


def test_head_and_204_carry_no_body(server: int) -> None:
    status, headers, body = split(exchange(server, get("/one", method="HEAD")))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "5"
    assert body == b""
    status, headers, body = split(exchange(server, get("/nocontent")))
    assert status == "HTTP/1.1 204 No Content"
    assert "content-length" not in headers
    assert body == b""


def test_keep_alive_serves_several_requests_on_one_connection(server: int) -> None:
    requests = get("/one", close=False) + get("/empty", close=False) + get("/pieces", close=False)
    reply = kept_open(server, requests)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert reply.count(b"Connection: keep-alive") == 3
    assert reply.endswith(b"Content-Length: 6\r\n\r\nabcdef")
    assert b"Content-Length: 0\r\n\r\nHTTP/1.1 200 OK" in reply


def test_http10_keep_alive_with_a_sized_answer_stays_open(server: int) -> None:
    request = b"GET /one HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"
    status, headers, body = split(kept_open(server, request))
    assert status == "HTTP/1.0 200 OK"
    assert headers["connection"] == "keep-alive"
    assert body == b"hello"


def test_http10_keep_alive_with_an_unsized_answer_closes(server: int) -> None:
    request = b"GET /unsized HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"
    _, headers, body = split(exchange(server, request))  # ends: the body is read to EOF
    assert headers["connection"] == "close"
    assert body == b"abcde"


def test_an_app_failing_before_the_head_gets_a_500(server: int) -> None:
    status, _, body = split(exchange(server, get("/fail-early")))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert b"Traceback" not in body


@pytest.mark.parametrize("path", ["/fail-late", "/exit-late"])
def test_an_app_failing_after_the_head_closes_the_connection(server: int, path: str) -> None:
    reply = exchange(server, get(path, close=False))  # keep-alive asked, yet it ends
    status, headers, body = split(reply)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "10"
    assert body == b"12345"  # short: the client sees the answer is incomplete


def test_without_keep_alive_every_answer_closes() -> None:
    with gunicorn("--keep-alive", "0") as port:
        _, headers, body = split(exchange(port, get("/one", close=False)))
    assert headers["connection"] == "close"
    assert body == b"hello"


def test_the_last_request_before_a_max_requests_restart_closes() -> None:
    with gunicorn("--max-requests", "1", "--keep-alive", "10") as port:
        _, headers, body = split(exchange(port, get("/one", close=False)))
    assert headers["connection"] == "close"
    assert body == b"hello"


def test_gunicorn_hooks_still_run(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.py"
    seen = tmp_path / "seen"
    hooks.write_text(
        "def pre_request(worker, req):\n"
        f"    open({str(seen)!r}, 'a').write('pre ' + req.path + '\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        f"    open({str(seen)!r}, 'a').write('post ' + resp.status + '\\n')\n",
        encoding="utf-8",
    )
    with gunicorn("-c", str(hooks)) as port:
        exchange(port, get("/one"))
    assert seen.read_text(encoding="utf-8") == "pre /one\npost 200 OK\n"
