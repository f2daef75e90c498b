"""Tests for :mod:`gateway.proxy.request`: the head the upstream is sent, built from a
hand-made WSGI environ, and the client's body as ``RequestBody`` reads it (framing, size
limit, and every failure to read it counted as the client's)."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.http.errors import InvalidChunkSize, NoMoreData

from gateway.errors import (
    BadRequest,
    ClientAborted,
    ClientBodyTimeout,
    PayloadTooLarge,
    RequestBodyError,
)
from gateway.proxy.request import SMALL_BODY, ForwardContext, RequestBody, build_request_head

CONTEXT = ForwardContext(
    public_url="https://gateway.test",
    public_scheme="https",
    max_body_size=1024 * 1024,
    gateway_cookies=frozenset({"wechat_gateway", "wechat_gateway_login"}),
)
IDENTITY = [("X-WeChat-OpenID", "oAlice"), ("X-WeChat-AppID", "wx0123456789abcdef")]


def environ(**keys: Any) -> dict[str, Any]:
    """A GET from 203.0.113.7 for ``gateway.test``, plus ``keys``."""
    return {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "gateway.test",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.input": io.BytesIO(b""),
        **keys,
    }


def head(env: dict[str, Any], framing: str = "", identity: Any = IDENTITY) -> list[str]:
    """The lines of the head for ``GET /page?x=1``, without the blank line that ends it."""
    raw = build_request_head(env, "GET", "/page?x=1", CONTEXT, identity, framing)
    assert raw.endswith(b"\r\n\r\n")
    return raw[: -len(b"\r\n\r\n")].decode("latin-1").split("\r\n")


def values(lines: list[str], name: str) -> list[str]:
    found = []
    for line in lines[1:]:
        field, _, value = line.partition(": ")
        if field.lower() == name.lower():
            found.append(value)
    return found


def names(lines: list[str]) -> list[str]:
    return [line.partition(":")[0].lower() for line in lines[1:]]


# --- the head -----------------------------------------------------------------------------


def test_request_line_host_and_end_to_end_headers() -> None:
    lines = head(environ(HTTP_ACCEPT="text/html", HTTP_X_TRACE="t-1"))
    assert lines[0] == "GET /page?x=1 HTTP/1.1"
    assert lines[1] == "Host: gateway.test"
    assert values(lines, "Accept") == ["text/html"]
    assert values(lines, "X-Trace") == ["t-1"]


def test_the_request_id_sent_is_the_one_the_gateway_chose() -> None:
    """The client's copy is replaced by the id the gateway chose for the request (which
    keeps a plain incoming one: ``gateway.server.logs.choose_request_id``)."""
    env = environ(HTTP_X_REQUEST_ID="client<bad>", **{"gateway.request_id": "abc123"})
    assert values(head(env), "X-Request-ID") == ["abc123"]
    assert values(head(environ(HTTP_X_REQUEST_ID="x")), "X-Request-ID") == []


def test_content_type_comes_from_the_environ_and_the_framing_from_the_body() -> None:
    env = environ(CONTENT_TYPE="application/json", CONTENT_LENGTH="999")
    lines = head(env, framing="Content-Length: 2")
    assert values(lines, "Content-Type") == ["application/json"]
    assert values(lines, "Content-Length") == ["2"]


@pytest.mark.parametrize(
    "key",
    [
        "HTTP_CONNECTION",
        "HTTP_PROXY_CONNECTION",
        "HTTP_KEEP_ALIVE",
        "HTTP_TE",
        "HTTP_TRANSFER_ENCODING",
        "HTTP_UPGRADE",
        "HTTP_PROXY_AUTHENTICATE",
        "HTTP_PROXY_AUTHORIZATION",
    ],
)
def test_hop_by_hop_headers_are_dropped(key: str) -> None:
    lines = head(environ(**{key: "x"}))
    assert key[5:].replace("_", "-").lower() not in names(lines)


def test_headers_named_in_connection_are_dropped() -> None:
    env = environ(
        HTTP_CONNECTION="keep-alive, X-Hop-Only ,x-other-hop",
        HTTP_X_HOP_ONLY="1",
        HTTP_X_OTHER_HOP="2",
        HTTP_X_KEPT="3",
    )
    lines = head(env)
    assert "x-hop-only" not in names(lines)
    assert "x-other-hop" not in names(lines)
    assert values(lines, "X-Kept") == ["3"]


def test_the_gateways_own_hop_headers_are_not_copied() -> None:
    lines = head(environ(HTTP_EXPECT="100-continue", HTTP_CONTENT_LENGTH="5"))
    assert "expect" not in names(lines)
    assert "content-length" not in names(lines)


@pytest.mark.parametrize(
    "key",
    [
        "HTTP_X_WECHAT_OPENID",
        "HTTP_X_WECHAT_UNIONID",
        "HTTP_X_WECHAT_APPID",
        "HTTP_X_WECHAT_NICKNAME",
        "HTTP_X_WECHAT_AVATAR",
        "HTTP_X_WECHAT_ANYTHING_ELSE",
    ],
)
def test_client_identity_headers_are_dropped(key: str) -> None:
    lines = head(environ(**{key: "spoofed"}), identity=[])
    assert not [name for name in names(lines) if name.startswith("x-wechat-")]
    assert "spoofed" not in "\r\n".join(lines)


def test_the_identity_comes_last_and_only_once() -> None:
    lines = head(environ(HTTP_X_WECHAT_OPENID="spoofed", HTTP_ACCEPT="*/*"))
    assert lines[-2:] == ["X-WeChat-OpenID: oAlice", "X-WeChat-AppID: wx0123456789abcdef"]
    assert values(lines, "X-WeChat-OpenID") == ["oAlice"]


@pytest.mark.parametrize(
    "key",
    [
        "HTTP_FORWARDED",
        "HTTP_X_REAL_IP",
        "HTTP_X_FORWARDED_PORT",
        "HTTP_X_FORWARDED_PREFIX",
        "HTTP_X_FORWARDED_SERVER",
        "HTTP_TRUE_CLIENT_IP",
        "HTTP_CF_CONNECTING_IP",
        "HTTP_X_ORIGINAL_URL",
        "HTTP_X_HOST",
    ],
)
def test_client_forwarding_claims_are_dropped(key: str) -> None:
    lines = head(environ(**{key: "198.51.100.66"}))
    assert key[5:].replace("_", "-").lower() not in names(lines)
    assert "198.51.100.66" not in "\r\n".join(lines)


def test_forwarded_headers_describe_the_public_request() -> None:
    env = environ(HTTP_X_FORWARDED_PROTO="http", HTTP_X_FORWARDED_HOST="evil.example")
    lines = head(env)
    assert values(lines, "X-Forwarded-For") == ["203.0.113.7"]
    assert values(lines, "X-Forwarded-Proto") == ["https"]
    assert values(lines, "X-Forwarded-Host") == ["gateway.test"]


def test_the_client_address_is_appended_to_x_forwarded_for() -> None:
    lines = head(environ(HTTP_X_FORWARDED_FOR="198.51.100.1"))
    assert values(lines, "X-Forwarded-For") == ["198.51.100.1, 203.0.113.7"]


def test_an_x_forwarded_for_named_in_connection_is_replaced_by_the_client_address() -> None:
    env = environ(HTTP_CONNECTION="X-Forwarded-For", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert values(head(env), "X-Forwarded-For") == ["203.0.113.7"]


def test_a_client_without_host_gets_the_public_host() -> None:
    env = environ(SERVER_PROTOCOL="HTTP/1.0")
    del env["HTTP_HOST"]
    lines = head(env)
    assert lines[1] == "Host: gateway.test"
    assert values(lines, "X-Forwarded-Host") == ["gateway.test"]


@pytest.mark.parametrize(
    ("cookie", "forwarded"),
    [
        ("a=1; wechat_gateway=sealed; b=2", ["a=1; b=2"]),
        ("wechat_gateway_login=pending; theme=dark", ["theme=dark"]),
        ("theme=dark", ["theme=dark"]),
        ("wechat_gateway=sealed", []),
        ("wechat_gateway=sealed; wechat_gateway_login=pending", []),
    ],
)
def test_the_gateways_cookies_are_removed_from_cookie(cookie: str, forwarded: list[str]) -> None:
    assert values(head(environ(HTTP_COOKIE=cookie)), "Cookie") == forwarded


# --- the body -----------------------------------------------------------------------------


class Failing(io.RawIOBase):
    """A client stream that gives ``first`` and then raises ``error``."""

    def __init__(self, error: BaseException, first: bytes = b"") -> None:
        self.error = error
        self.first = first

    def read(self, size: int = -1) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        raise self.error


def body(data: bytes | io.RawIOBase = b"", max_size: int = 1024, **keys: Any) -> RequestBody:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    return RequestBody(environ(**{"wsgi.input": stream, **keys}), max_size, 5.0)


def test_a_content_length_body_keeps_its_length() -> None:
    request = body(b"hello", CONTENT_LENGTH="5")
    assert (request.framing, request.chunked, request.length, request.empty) == (
        "Content-Length: 5",
        False,
        5,
        False,
    )
    assert request.small() == b"hello"


def test_a_large_content_length_body_streams_as_it_came() -> None:
    data = bytes(range(256)) * (SMALL_BODY // 256 + 1)
    request = body(data, max_size=0, CONTENT_LENGTH=str(len(data)))
    assert request.small() is None
    assert b"".join(request.chunks()) == data


def test_a_chunked_body_is_sent_chunked() -> None:
    request = body(b"abc", HTTP_TRANSFER_ENCODING="chunked")
    assert (request.framing, request.chunked, request.empty) == (
        "Transfer-Encoding: chunked",
        True,
        False,
    )
    assert request.small() is None
    assert list(request.chunks()) == [b"3\r\nabc\r\n", b"0\r\n\r\n"]


def test_a_terminated_input_with_any_transfer_coding_is_chunked() -> None:
    request = body(b"", HTTP_TRANSFER_ENCODING="gzip, chunked", **{"wsgi.input_terminated": True})
    assert request.chunked
    assert list(request.chunks()) == [b"0\r\n\r\n"]


def test_no_body() -> None:
    request = body()
    assert (request.framing, request.chunked, request.length, request.empty) == (
        "",
        False,
        None,
        True,
    )
    zero = body(CONTENT_LENGTH="0")
    assert zero.empty and zero.framing == "Content-Length: 0"
    assert zero.small() == b""


@pytest.mark.parametrize("length", ["five", "-1", "1e3"])
def test_an_unusable_content_length_is_a_bad_request(length: str) -> None:
    with pytest.raises(BadRequest, match="Content-Length"):
        body(CONTENT_LENGTH=length)


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    stream = Failing(AssertionError("read"))
    with pytest.raises(PayloadTooLarge) as caught:
        body(stream, max_size=1024, CONTENT_LENGTH="1025")
    assert caught.value.status == 413
    assert body(b"x" * 1024, max_size=1024, CONTENT_LENGTH="1024").small() == b"x" * 1024


def test_a_chunked_body_over_the_limit_is_cut_off() -> None:
    request = body(b"x" * 2000, max_size=1024, HTTP_TRANSFER_ENCODING="chunked")
    with pytest.raises(PayloadTooLarge):
        list(request.chunks())


def test_no_limit_when_the_limit_is_zero() -> None:
    request = body(b"x" * 5000, max_size=0, HTTP_TRANSFER_ENCODING="chunked")
    assert list(request.chunks())[-1] == b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (ConnectionResetError(104, "reset"), ClientAborted, 400),
        (BrokenPipeError(32, "broken"), ClientAborted, 400),
        (NoMoreData(b""), ClientAborted, 400),
        (TimeoutError("timed out"), ClientBodyTimeout, 408),
        (InvalidChunkSize(b"zz"), RequestBodyError, 400),
        (ValueError("bad chunk"), RequestBodyError, 400),
    ],
    ids=["reset", "broken-pipe", "no-more-data", "timeout", "invalid-chunk", "value-error"],
)
@pytest.mark.parametrize(
    "framing",
    [{"CONTENT_LENGTH": "100000"}, {"HTTP_TRANSFER_ENCODING": "chunked"}],
    ids=["content-length", "chunked"],
)
def test_a_failing_client_stream_is_the_clients_failure(
    error: Exception, kind: type[RequestBodyError], status: int, framing: dict[str, str]
) -> None:
    request = body(Failing(error, first=b"partial"), max_size=0, **framing)
    with pytest.raises(kind) as caught:
        list(request.chunks())
    assert type(caught.value) is kind
    assert caught.value.status == status


def test_a_failing_small_body_is_the_clients_failure() -> None:
    with pytest.raises(ClientAborted):
        body(Failing(ConnectionResetError()), CONTENT_LENGTH="10").small()
    with pytest.raises(ClientBodyTimeout):
        body(Failing(TimeoutError()), CONTENT_LENGTH="10").small()


@pytest.mark.parametrize("small", [True, False])
def test_a_body_shorter_than_its_length_is_aborted(small: bool) -> None:
    length = 10 if small else SMALL_BODY + 10
    request = body(b"only this", max_size=0, CONTENT_LENGTH=str(length))
    with pytest.raises(ClientAborted, match="before its length"):
        if small:
            request.small()
        else:
            list(request.chunks())


@pytest.fixture
def client_socket() -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair()
    ours.settimeout(42.0)
    with ours, theirs:
        yield ours


def test_the_client_socket_waits_client_body_timeout_while_the_body_is_read(
    client_socket: socket.socket,
) -> None:
    seen: list[float | None] = []

    class Stream(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            seen.append(client_socket.gettimeout())
            return b"" if seen[1:] else b"data"

    env = environ(**{"wsgi.input": Stream(), "gunicorn.socket": client_socket})
    request = RequestBody({**env, "HTTP_TRANSFER_ENCODING": "chunked"}, 0, 3.0)
    assert list(request.chunks()) == [b"4\r\ndata\r\n", b"0\r\n\r\n"]
    assert seen == [3.0, 3.0]
    request.done()
    assert client_socket.gettimeout() == 42.0
