"""Forwarding under attack: the proxy findings of the hardening run, end to end.

A real ``wechat-gateway serve`` with one worker (so every request shares one upstream
connection pool) in front of a ``RawUpstream`` that misbehaves on demand:

- an upstream that sends bytes after the end of its answer must not have them read as the
  next user's answer (the pooled connection is checked whatever its idle time);
- a client silent mid-upload is cut off after ``server.client_body_timeout`` (408), and
  the upstream connection it held is closed;
- an app's ``Set-Cookie`` for the gateway's own cookies never reaches the browser;
- a client's forwarding claims (``Forwarded``, ``X-Real-IP``...) never reach the app;
- a malformed chunked body is a 400 with one warning line, no traceback;
- a client cutting off its own upload is logged as aborted by the client, not as an
  upstream failure.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.raw_e2e import send
from tests.helpers.support import GatewayProcess, base_config, free_port, session_cookie
from tests.helpers.upstreams import Exchange, RawUpstream

USERS = ("oUserAlice000000000000000001", "oUserBob0000000000000000002")
FAKE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b"
# Long enough for the bytes an upstream sends late to be on the socket before the next
# request; short against the 0.5 s the pool once trusted a connection without a look.
_LATE = 0.05
_NEXT = 0.2


def cookie(openid: str) -> str:
    return f"wechat_gateway={session_cookie(openid, unionid=None)}"


def _whoami(exchange: Exchange) -> None:
    exchange.reply((exchange.request.value("X-WeChat-OpenID") or "").encode())


def _fake_answer(exchange: Exchange) -> bytes:
    """A complete answer claiming this request's user: what the next request would read."""
    body = b"LEFTOVER " + (exchange.request.value("X-WeChat-OpenID") or "").encode()
    return FAKE % (len(body), body)


def _overrun_length(exchange: Exchange) -> None:
    exchange.reply(b"short")
    time.sleep(_LATE)
    exchange.send(_fake_answer(exchange))


def _overrun_chunked(exchange: Exchange) -> None:
    exchange.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort\r\n0\r\n\r\n")
    time.sleep(_LATE)
    exchange.send(_fake_answer(exchange))


def _body_after_head(exchange: Exchange) -> None:
    fake = _fake_answer(exchange)
    exchange.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(fake))
    time.sleep(_LATE)
    exchange.send(fake)  # a body for a HEAD request, which has none


def _cookies(exchange: Exchange) -> None:
    exchange.reply(
        b"ok",
        headers=[
            ("Set-Cookie", "wechat_gateway=evil; Path=/; HttpOnly"),
            ("Set-Cookie", " wechat_gateway =evil2"),
            ("Set-Cookie", "wechat_gateway=evil3; Path=/app; Domain=127.0.0.1"),
            ("Set-Cookie", "wechat_gateway_login=evil4; Path=/_gateway/"),
            ("Set-Cookie", "app_session=kept; Path=/"),
            ("Set-Cookie", "Wechat_Gateway=another-name"),
            ("Set-Cookie", "prefs=wechat_gateway=in-a-value"),
        ],
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    server = RawUpstream()
    server.route("/whoami", _whoami)
    server.route("/overrun/length", _overrun_length)
    server.route("/overrun/chunked", _overrun_chunked)
    server.route("/overrun/head", _body_after_head)
    server.route("/cookies", _cookies)
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: RawUpstream) -> Iterator[int]:
    port = free_port()
    config = base_config(
        port,
        upstream.url,
        server={"bind": f"127.0.0.1:{port}", "workers": 1, "client_body_timeout": "1s"},
    )
    with GatewayProcess(config, tmp_path_factory.mktemp("hardening")) as process:
        yield process.port


def _log(tmp: Path) -> str:
    logs = sorted(tmp.glob("gateway-*.log"))
    return logs[-1].read_text(encoding="utf-8", errors="replace")


def _metric(port: int, name: str) -> float:
    text = send(port, "/_gateway/metrics").body.decode()
    match = re.search(rf"^wechat_gateway_{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


# --- 1. a pooled connection with bytes left on it -------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [("/overrun/length", "GET"), ("/overrun/chunked", "GET"), ("/overrun/head", "HEAD")],
)
def test_bytes_after_an_answer_never_reach_the_next_user(
    gateway: int, path: str, method: str
) -> None:
    for round_ in range(3):
        first, second = USERS if round_ % 2 == 0 else reversed(USERS)
        answer = send(gateway, path, [("Cookie", cookie(first))], method=method)
        assert answer.status == 200
        if method == "GET":
            assert answer.body == b"short"
        time.sleep(_NEXT)
        reply = send(gateway, "/whoami", [("Cookie", cookie(second))])
        assert reply.status == 200
        assert reply.body == second.encode(), f"round {round_}: {reply.body!r}"


# --- 2. a client silent mid-upload ----------------------------------------------------------


def _silent_upload(port: int, length: int, sent: bytes) -> tuple[bytes, float]:
    """Send a head announcing ``length`` bytes and only ``sent`` of them; what comes back
    and how long until the gateway closed the connection."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nCookie: %b\r\n\r\n%b"
            % (length, cookie(USERS[0]).encode(), sent)
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - start


@pytest.mark.parametrize("length", [1000, 4 * 1024 * 1024])
def test_a_client_silent_mid_upload_is_cut_off(
    gateway: int, upstream: RawUpstream, length: int
) -> None:
    before = upstream.connections
    data, took = _silent_upload(gateway, length, b"x" * 500)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert 0.9 < took < 5
    # The upstream connection the upload held (a large body streams) is closed too.
    deadline = time.monotonic() + 5
    while upstream.open_connections(since=before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not upstream.open_connections(since=before)
    assert not upstream.requests_to("/upload") or all(
        len(seen.wire_body) < length for seen in upstream.requests_to("/upload")
    )


# --- 3. the app's Set-Cookie for the gateway's cookies ---------------------------------------


def test_an_app_cannot_set_the_gateways_cookies(gateway: int) -> None:
    reply = send(gateway, "/cookies", [("Cookie", cookie(USERS[0]))])
    assert reply.status == 200
    assert reply.values("Set-Cookie") == [
        "app_session=kept; Path=/",
        "Wechat_Gateway=another-name",
        "prefs=wechat_gateway=in-a-value",
    ]


# --- 5. forwarding claims made by the client --------------------------------------------------


CLAIMS = [
    ("Forwarded", "for=10.9.9.9;proto=https;host=evil.example"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Real-IP", "10.9.9.9"),
    ("X_Real_IP", "10.9.9.8"),
    ("X-Client-IP", "10.9.9.9"),
    ("True-Client-IP", "10.9.9.9"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("Front-End-Https", "on"),
    ("X-Url-Scheme", "https"),
]


def test_client_forwarding_claims_never_reach_the_app(gateway: int, upstream: RawUpstream) -> None:
    reply = send(gateway, "/claims?x=1", [("Cookie", cookie(USERS[0])), *CLAIMS])
    assert reply.status == 200
    seen = upstream.only("/claims")
    names = {name.lower() for name, _ in seen.headers}
    for name, _ in CLAIMS:
        assert name.lower().replace("_", "-") not in names, name
    assert seen.value("X-Forwarded-Proto") == "http"
    assert seen.value("X-Forwarded-Host") == f"127.0.0.1:{gateway}"
    assert seen.value("X-Forwarded-For") == "127.0.0.1"


# --- 6. malformed chunked request bodies ------------------------------------------------------


MALFORMED_CHUNKED = [
    b"+5\r\nhello\r\n0\r\n\r\n",  # a sign before the size
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
    b"5\r\nhelloXY0\r\n\r\n",  # no CRLF after the chunk data
    b"5;=bad\r\nhello\r\n0\r\n\r\n",  # an extension without a name
    b'5;a="open\r\nhello\r\n0\r\n\r\n',  # an unterminated quoted extension
    b"5\r\nhello\r\n0\r\nnot a trailer\r\n\r\n",  # a trailer line without a colon
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
    b"5\r\nhello\r\n0\r\nX-T: a\n\r\n",  # bare LF in a trailer
]


@pytest.mark.parametrize("body", MALFORMED_CHUNKED, ids=lambda b: b[:12].decode("latin-1"))
def test_a_malformed_chunked_body_is_a_400_without_a_traceback(
    gateway: int, tmp_path_factory: pytest.TempPathFactory, body: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", gateway), timeout=10) as sock:
        sock.sendall(
            b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Cookie: %b\r\n\r\n%b" % (cookie(USERS[0]).encode(), body)
        )
        data = b""
        while chunk := sock.recv(65536):  # the connection is closed after the answer
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, "one answer only"


# --- 7. a client cutting off its own upload ---------------------------------------------------


def test_a_client_cutting_off_its_upload_is_not_an_upstream_error(gateway: int) -> None:
    errors = _metric(gateway, 'upstream_errors_total{kind="unavailable"}')
    aborted = _metric(gateway, 'requests_total{outcome="client_aborted"}')
    for reset in (False, True):
        sock = socket.create_connection(("127.0.0.1", gateway), timeout=10)
        sock.sendall(
            b"POST /upload-cut HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nCookie: %b\r\n\r\n"
            % (8 * 1024 * 1024, cookie(USERS[0]).encode())
        )
        sock.sendall(b"y" * 300_000)
        time.sleep(0.2)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 5
    while (
        _metric(gateway, 'requests_total{outcome="client_aborted"}') < aborted + 2
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert _metric(gateway, 'requests_total{outcome="client_aborted"}') == aborted + 2
    assert _metric(gateway, 'upstream_errors_total{kind="unavailable"}') == errors


def test_the_log_names_the_client_and_has_no_traceback(
    gateway: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Runs after the tests above, on the same gateway's log.
    log = _log(tmp_path_factory.getbasetemp() / "hardening0")
    assert "Traceback" not in log
    assert "unexpected error" not in log
    assert log.count("malformed request body") == len(MALFORMED_CHUNKED)
    assert log.count("aborted by the client") >= 2
    assert "/upload-cut: the upstream" not in log
    assert "no request body bytes from the client for 1s" in log


# --- 8. a large body read off the socket, then the next request on the connection ----------


def _read_response(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes, bytes]:
    """One response (Content-Length framed) from ``sock``: head, body, and what is left."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


@pytest.mark.parametrize("pieces", [1, 7])
def test_a_large_body_then_a_pipelined_request_each_reach_the_upstream_whole(
    gateway: int, upstream: RawUpstream, pieces: int
) -> None:
    """A body of known length goes socket to socket; the bytes after it on the client's
    connection (here a second request, sent in the same write or in odd-sized pieces) are
    the next request, never part of the body."""
    body = bytes(range(256)) * 1200 + b"end-of-body"  # 300 KiB: past the small-body path
    wire = (
        b"POST /echo-%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nCookie: %b\r\n\r\n%b"
        b"GET /whoami HTTP/1.1\r\nHost: t\r\nCookie: %b\r\n\r\n"
        % (pieces, len(body), cookie(USERS[0]).encode(), body, cookie(USERS[1]).encode())
    )
    with socket.create_connection(("127.0.0.1", gateway), timeout=10) as sock:
        step = -(-len(wire) // pieces)
        for start in range(0, len(wire), step):
            sock.sendall(wire[start : start + step])
            time.sleep(0.01)
        head, echoed, rest = _read_response(sock, b"")
        assert head.startswith(b"HTTP/1.1 200 "), head
        second_head, who, _ = _read_response(sock, rest)
    assert second_head.startswith(b"HTTP/1.1 200 "), second_head
    assert who == USERS[1].encode()
    seen = upstream.only(f"/echo-{pieces}")
    assert seen.body == body
    assert echoed.endswith(body)
