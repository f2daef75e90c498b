"""Tests for :mod:`gateway.proxy.forward`: one WSGI request through ``Forwarder`` to an
upstream played by a thread on a loopback socket with scripted answers. What the client
gets (status, headers and body, or the error the gateway turns into a page) and what the
upstream was sent are both checked. The real gateway in front of real apps is
``tests/e2e/test_proxy.py``."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from types import EllipsisType
from typing import Any

import pytest

from gateway.config import UpstreamSettings
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.forward import Forwarder, UpstreamBroken
from gateway.proxy.request import ForwardContext
from gateway.proxy.router import Route

CONTEXT = ForwardContext(
    public_url="https://gateway.test",
    public_scheme="https",
    max_body_size=1024 * 1024,
    gateway_cookies=frozenset({"wechat_gateway", "wechat_gateway_login"}),
)


def answer(*headers: str, body: bytes = b"", status: str = "200 OK", length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


class ScriptedUpstream:
    """A loopback listener; ``answer`` starts a thread that takes one connection per
    scripted answer, reads the request on it and sends the answer (``None``: closes the
    connection without answering; ``...``: never answers). Connections stay open until
    ``close``, so the gateway may pool them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self._open: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def answer(self, *answers: bytes | EllipsisType | None) -> None:
        self._thread = threading.Thread(target=self._serve, args=(answers,), daemon=True)
        self._thread.start()

    def _serve(self, answers: tuple[bytes | EllipsisType | None, ...]) -> None:
        for reply in answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(conn)
            conn.settimeout(5)
            self.requests.append(_read_request(conn))
            if reply is None:
                conn.close()
            elif isinstance(reply, bytes):
                conn.sendall(reply)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a thread waiting in accept
        self.listener.close()
        for conn in self._open:
            conn.close()
        if self._thread is not None:
            self._thread.join(5)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
            while len(body) < length:
                body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class Sent:
    """What the gateway gave ``start_response``."""

    status = ""
    headers: list[tuple[str, str]]

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return lambda data: None

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


Setup = Callable[..., tuple[ScriptedUpstream, Route]]


@pytest.fixture
def upstream_and_route() -> Iterator[Setup]:
    """``upstream_and_route(base="", **route settings)``: a scripted upstream (not yet
    answering) and a route to it, its URL's path ``base``; both closed afterwards."""
    made: list[tuple[ScriptedUpstream, Route]] = []

    def make(base: str = "", **settings: Any) -> tuple[ScriptedUpstream, Route]:
        upstream = ScriptedUpstream()
        options = {"prefix": "/", "timeout": 2.0, **settings}
        route = Route(UpstreamSettings(url=upstream.url + base, **options))
        made.append((upstream, route))
        return upstream, route

    yield make
    for upstream, route in made:
        route.upstream.close()
        upstream.close()


def environ(method: str = "GET", body: bytes = b"", **keys: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "gateway.test",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.input": io.BytesIO(body),
        **keys,
    }
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    return env


def forward(
    route: Route,
    env: dict[str, Any] | None = None,
    target: str = "/page",
    identity: Iterable[tuple[str, str]] = (),
) -> tuple[Sent, bytes]:
    """The whole exchange, as a server runs it: call, iterate the body, close it."""
    sent = Sent()
    result = Forwarder(CONTEXT)(env or environ(), sent, route, target, identity)
    try:
        return sent, b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def test_a_simple_exchange(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route(base="/base", prefix="/app", strip_prefix=True)
    upstream.answer(answer("Content-Type: text/plain", "X-App: 1", body=b"hello"))
    env = environ(HTTP_ACCEPT="text/plain", HTTP_X_WECHAT_OPENID="spoofed")
    sent, body = forward(route, env, "/app/page?x=1", [("X-WeChat-OpenID", "oAlice")])
    assert sent.status == "200 OK"
    assert sent.headers == [("Content-Type", "text/plain"), ("X-App", "1"), ("Content-Length", "5")]
    assert body == b"hello"
    head = upstream.requests[0].decode("latin-1").split("\r\n")
    assert head[0] == "GET /base/page?x=1 HTTP/1.1"
    assert "Host: gateway.test" in head
    assert "Accept: text/plain" in head
    assert "X-Forwarded-For: 203.0.113.7" in head
    assert [line for line in head if line.lower().startswith("x-wechat-")] == [
        "X-WeChat-OpenID: oAlice"
    ]
    # Read to its end and left open by the upstream, the connection went back to the pool.
    sock, reused = route.upstream.connect()
    assert reused
    sock.close()


def test_a_small_body_goes_with_the_head(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(answer(status="201 Created"))
    sent, _ = forward(route, environ("POST", b'{"a": 1}', CONTENT_TYPE="application/json"))
    assert sent.status == "201 Created"
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: 8\r\n" in head + b"\r\n"
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert body == b'{"a": 1}'


def test_a_body_that_is_not_complete_at_once_is_streamed(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(
        answer("Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n", length=False)
    )
    sent, body = forward(route)
    assert sent.headers == []
    assert body == b"abc"


def test_hop_by_hop_response_headers_are_dropped(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(
        answer("Connection: X-Hop", "X-Hop: 1", "Keep-Alive: timeout=5", "X-End: 2", body=b"ok")
    )
    sent, _ = forward(route)
    assert sent.headers == [("X-End", "2"), ("Content-Length", "2")]


def test_the_reason_phrase_is_kept_or_filled_in(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(answer(status="418 Short And Stout"), answer(status="404 "))
    assert forward(route)[0].status == "418 Short And Stout"
    route.upstream.close()  # the next request takes the next connection
    assert forward(route)[0].status == "404 Not Found"


@pytest.mark.parametrize(
    ("location", "rewritten"),
    [
        ("{upstream}/next?x=1", "https://gateway.test/next?x=1"),
        ("{upstream}", "https://gateway.test/"),
        ("{upstream}?q=1", "https://gateway.test/?q=1"),
        ("HTTP://127.0.0.1:{port}/Case", "https://gateway.test/Case"),
        ("{upstream}0/another-port", "{upstream}0/another-port"),
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),
        ("/relative?x=1", "/relative?x=1"),
    ],
)
def test_a_location_on_the_upstreams_origin_is_rewritten_to_the_public_url(
    upstream_and_route: Setup, location: str, rewritten: str
) -> None:
    upstream, route = upstream_and_route()
    names = {"upstream": upstream.url, "port": upstream.port}
    upstream.answer(answer(f"Location: {location.format(**names)}", status="302 Found"))
    sent, _ = forward(route)
    assert sent.values("Location") == [rewritten.format(**names)]


def test_a_set_cookie_for_the_gateways_cookies_is_removed(
    upstream_and_route: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(
        answer(
            "Set-Cookie: wechat_gateway=chosen-by-the-app; Path=/; HttpOnly",
            "Set-Cookie: app_session=1; Path=/",
            "Set-Cookie:  wechat_gateway_login =x",
            "Set-Cookie: wechat_gateway_theme=dark",
        )
    )
    with caplog.at_level(logging.WARNING, logger="gateway.proxy"):
        sent, _ = forward(route)
    assert sent.values("Set-Cookie") == ["app_session=1; Path=/", "wechat_gateway_theme=dark"]
    removed = [r for r in caplog.records if "Set-Cookie for the gateway's own cookie" in r.message]
    assert len(removed) == 2


def test_an_upstream_that_closes_without_answering_is_502(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(None)
    with pytest.raises(UpstreamUnavailable, match="closed the connection") as caught:
        forward(route)
    assert caught.value.status == 502


def test_a_refused_upstream_is_502() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        route = Route(UpstreamSettings(prefix="/", url=url, timeout=2.0))
        with pytest.raises(UpstreamUnavailable, match="connection refused") as caught:
            forward(route)
    assert caught.value.status == 502


def test_an_invalid_answer_is_502(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(b"SMTP ready\r\n\r\n")
    with pytest.raises(UpstreamUnavailable, match="invalid response") as caught:
        forward(route)
    assert caught.value.status == 502


def test_no_answer_within_the_timeout_is_504(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route(timeout=0.2)
    upstream.answer(...)
    with pytest.raises(UpstreamTimeout) as caught:
        forward(route)
    assert caught.value.status == 504


def test_an_upstream_dying_mid_body_aborts_the_client_response(upstream_and_route: Setup) -> None:
    upstream, route = upstream_and_route()
    upstream.answer(answer("Content-Length: 100", body=b"only ten b", length=False))
    sent = Sent()
    result = Forwarder(CONTEXT)(environ(), sent, route, "/page", ())
    assert sent.status == "200 OK"
    assert sent.values("Content-Length") == ["100"]
    pieces = iter(result)
    assert next(pieces) == b"only ten b"
    upstream.close()
    with pytest.raises(UpstreamBroken):
        next(pieces)
