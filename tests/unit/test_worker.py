"""``gateway.server.worker`` piece by piece: the response's sends, the Date clock, the
settled config, and which worker ``serve`` runs. The worker on the wire, under a real
gunicorn, is ``tests/e2e/test_worker.py``."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

import pytest
from gunicorn.config import Config
from gunicorn.http import message, wsgi

from gateway.config import validate
from gateway.server.serve import GatewayServer
from gateway.server.worker import (
    GatewayResponse,
    _Clock,
    _settle_forwarding_trust,
    _SettledConfig,
)
from tests.helpers.support import base_config

if TYPE_CHECKING:
    pass

# -- the pieces -------------------------------------------------------------------------


class RecordingSocket:
    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sends.append(bytes(data))
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


class FakeRequest:
    def __init__(self, method: str = "GET", version: tuple[int, int] = (1, 1)) -> None:
        self.method = method
        self.version = version

    def should_close(self) -> bool:
        return False


def response(method: str = "GET") -> tuple[GatewayResponse, RecordingSocket]:
    sock = RecordingSocket()
    return GatewayResponse(FakeRequest(method), sock, Config()), sock


def test_the_head_and_a_one_piece_body_leave_in_one_send() -> None:
    resp, sock = response()
    resp.start_response("200 OK", [("Content-Length", "5"), ("X-A", "1")])
    resp.write(b"hello")
    resp.close()
    assert len(sock.sends) == 1
    head, _, body = sock.sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: ")
    assert head.endswith(b"\r\nConnection: keep-alive\r\nContent-Length: 5\r\nX-A: 1")
    assert body == b"hello"
    assert resp.headers_sent and resp.sent == 5


def test_later_pieces_are_sent_as_they_come() -> None:
    resp, sock = response()
    resp.start_response("200 OK", [("Content-Length", "4")])
    resp.write(b"ab")
    resp.write(b"cdef")
    assert [piece.partition(b"\r\n\r\n")[2] for piece in sock.sends[:1]] == [b"ab"]
    assert sock.sends[1:] == [b"cd"]
    assert resp.sent == 4


def test_chunked_and_bodiless_answers_keep_gunicorns_framing() -> None:
    resp, sock = response()
    resp.start_response("200 OK", [])
    resp.write(b"abc")
    resp.close()
    assert sock.sends[0].endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert sock.sends[1:] == [b"3\r\nabc\r\n", b"0\r\n\r\n"]
    resp, sock = response("HEAD")
    resp.start_response("200 OK", [("Content-Length", "3")])
    resp.write(b"abc")
    assert len(sock.sends) == 1 and sock.sends[0].endswith(b"Content-Length: 3\r\n\r\n")


_PROXIED_CASES = [
    ("GET", 200, [("Content-Type", "text/plain"), ("Content-Length", "5")], 5, b"hello"),
    (
        "GET",
        200,
        [("X-A", "1"), ("Server", "app/1"), ("Date", "Tue, 01 Dec 2026 00:00:00 GMT")],
        None,
        b"streamed",
    ),
    ("GET", 404, [("Content-Length", "0"), ("Server", "app/1")], 0, b""),
    ("HEAD", 200, [("Content-Length", "3"), ("Date", "Tue, 01 Dec 2026 00:00:00 GMT")], 3, b""),
    ("GET", 204, [("Content-Length", "7"), ("X-A", "1")], 7, b""),
    ("GET", 304, [("ETag", '"x"'), ("Content-Length", "12")], 12, b""),
    ("GET", 101, [("Content-Length", "2")], 2, b""),
    (
        "POST",
        201,
        [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Request-ID", "r1")],
        None,
        b"ok",
    ),
]


@pytest.mark.parametrize(("method", "code", "headers", "length", "body"), _PROXIED_CASES)
def test_a_proxied_head_is_sent_as_gunicorns_start_response_would_send_it(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    code: int,
    headers: list[tuple[str, str]],
    length: int | None,
    body: bytes,
) -> None:
    """``start_proxied`` skips gunicorn's field checks for a head the forwarder's strict
    reader parsed; what goes out, and the response's state, are the same."""
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    status = f"{code} Whatever"
    checked, checked_sock = response(method)
    checked.start_response(status, list(headers))
    fast, fast_sock = response(method)
    app_fields = frozenset(n.lower() for n, _ in headers if n.lower() in ("server", "date"))
    fast.start_proxied(status, code, list(headers), length, app_fields)
    for name in ("status", "status_code", "headers", "response_length", "chunked"):
        assert getattr(fast, name) == getattr(checked, name), name
    assert fast._omits_body == checked._omits_body
    assert fast._app_fields == checked._app_fields
    for resp in (checked, fast):
        resp.write(body)
        resp.close()
    assert fast_sock.sends == checked_sock.sends


def test_a_second_start_of_a_proxied_head_is_refused() -> None:
    resp, _ = response()
    resp.start_proxied("200 OK", 200, [], None, frozenset())
    with pytest.raises(AssertionError):
        resp.start_proxied("200 OK", 200, [], None, frozenset())


def test_the_clock_formats_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.25)
    first = clock.now()
    assert first == "Fri, 15 Jan 2027 08:00:00 GMT"
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.9)
    assert clock.now() is first
    monkeypatch.setattr(time, "time", lambda: 1_800_000_001.0)
    assert clock.now() == "Fri, 15 Jan 2027 08:00:01 GMT"


def test_settled_config_answers_like_gunicorns() -> None:
    cfg = Config()
    cfg.set("keepalive", 7)
    cfg.set("limit_request_line", 1234)
    settled: Any = _SettledConfig(cfg)
    for name in ("keepalive", "limit_request_line", "is_ssl", "secure_scheme_headers"):
        assert getattr(settled, name) == getattr(cfg, name)
    assert settled.forwarded_allow_networks() == cfg.forwarded_allow_networks()
    assert "keepalive" in vars(settled)  # kept after the first look-up
    with pytest.raises(AttributeError):
        _ = settled.no_such_setting


@pytest.mark.parametrize("allowed", ["", "127.0.0.1,::1", "*", "10.0.0.0/8"])
def test_forwarding_trust_is_gunicorns_answer(
    monkeypatch: pytest.MonkeyPatch, allowed: str
) -> None:
    """With ``forwarded_allow_ips`` empty (the gateway's setting) the answer comes without
    parsing the peer's address; with a list, gunicorn's own check stays."""
    monkeypatch.setattr(
        message.HeaderPolicy, "_peer_is_trusted_proxy", message.HeaderPolicy._peer_is_trusted_proxy
    )
    cfg = Config()
    cfg.set("forwarded_allow_ips", allowed)
    peers: list[Any] = [("127.0.0.1", 5000), ("10.1.2.3", 1), ("::1", 1, 0, 0), "/run/gw.sock", b""]

    class Peer(message.HeaderPolicy):  # type: ignore[misc]
        def __init__(self, peer: Any) -> None:
            self.cfg = cfg
            self.peer_addr = peer

    expected = [Peer(peer)._peer_is_trusted_proxy() for peer in peers]
    _settle_forwarding_trust(_SettledConfig(cfg))
    assert [Peer(peer)._peer_is_trusted_proxy() for peer in peers] == expected
    patched = message.HeaderPolicy._peer_is_trusted_proxy.__name__ == "peer_is_trusted_proxy"
    assert patched == (allowed == "")


def test_gunicorn_lets_the_worker_choose_the_response_class() -> None:
    # setup.py's lower bound: wsgi.create takes response_class from gunicorn 26.2 on.
    assert "response_class" in inspect.signature(wsgi.create).parameters


def test_serve_runs_this_worker_for_gevent_and_gunicorns_for_gthread() -> None:
    def options(worker_class: str) -> dict[str, Any]:
        config = base_config(1, "http://127.0.0.1:2", server={"worker_class": worker_class})
        server = GatewayServer.__new__(GatewayServer)  # options only: no ledger, no metrics
        server.settings = validate(config, {})
        return server.gunicorn_options()

    assert options("gevent")["worker_class"] == "gateway.server.worker.GatewayWorker"
    assert options("gthread")["worker_class"] == "gthread"
