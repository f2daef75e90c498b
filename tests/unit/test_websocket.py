"""WebSocket's few protocol facts the gateway uses: handshake checks, the accept key, close
frames and frame edges; the watch that ends tunnels; the gauges. Real tunnels through a real
gateway are ``tests/e2e/test_websocket.py``."""

from __future__ import annotations

import base64
import os
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from gateway.errors import BadRequest, UpgradeRequired
from gateway.proxy.tunnel import Tunnel, Tunnels
from gateway.proxy.websocket import (
    FrameEdges,
    accept_key,
    close_frame,
    valid_key,
    websocket_handshake,
)
from gateway.server.metrics import Metrics

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3


def handshake(**overrides: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "keep-alive, Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    for key, value in overrides.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


def test_the_rfc_example_accept_key() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake_is_a_websocket() -> None:
    assert websocket_handshake(handshake()) is True
    assert websocket_handshake(handshake(HTTP_UPGRADE="WebSocket")) is True


@pytest.mark.parametrize("upgrade", [None, "h2c", "TLS/1.2", "websockets", ""])
def test_no_upgrade_or_another_protocol_is_an_ordinary_request(upgrade: str | None) -> None:
    assert websocket_handshake(handshake(HTTP_UPGRADE=upgrade)) is False


@pytest.mark.parametrize(
    "overrides",
    [
        {"HTTP_CONNECTION": None},
        {"HTTP_CONNECTION": "keep-alive"},
        {"HTTP_CONNECTION": "close", "REQUEST_METHOD": "POST"},
        {"SERVER_PROTOCOL": "HTTP/1.0"},
    ],
)
def test_an_upgrade_that_does_not_count_is_an_ordinary_request(overrides: dict[str, Any]) -> None:
    """RFC 9110 7.8: ``Upgrade`` not named in ``Connection``, or in HTTP/1.0, is ignored."""
    assert websocket_handshake(handshake(**overrides)) is False


@pytest.mark.parametrize(
    "overrides",
    [
        {"REQUEST_METHOD": "POST"},
        {"REQUEST_METHOD": "HEAD"},
        {"REQUEST_METHOD": "OPTIONS"},
        {"HTTP_SEC_WEBSOCKET_KEY": None},
        {"HTTP_SEC_WEBSOCKET_KEY": ""},
        {"HTTP_SEC_WEBSOCKET_KEY": "not base64 at all!!!!!!!"},
        {"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(15)).decode()},
        {"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(17)).decode()},
        {"CONTENT_LENGTH": "5"},
        {"HTTP_TRANSFER_ENCODING": "chunked"},
    ],
)
def test_a_malformed_handshake_is_a_bad_request(overrides: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as raised:
        websocket_handshake(handshake(**overrides))
    assert raised.value.status == 400


@pytest.mark.parametrize("version", [None, "8", "12", "13, 8", "abc"])
def test_another_version_is_told_which_one_is_spoken(version: str | None) -> None:
    with pytest.raises(UpgradeRequired) as raised:
        websocket_handshake(handshake(HTTP_SEC_WEBSOCKET_VERSION=version))
    assert raised.value.status == 426
    assert ("Sec-WebSocket-Version", "13") in raised.value.extra_headers


def test_an_empty_content_length_is_no_body() -> None:
    assert websocket_handshake(handshake(CONTENT_LENGTH="0")) is True


@given(st.binary(min_size=16, max_size=16))
def test_every_16_byte_key_is_valid(raw: bytes) -> None:
    assert valid_key(base64.b64encode(raw).decode())


def parse_close(data: bytes, *, client: bool) -> tuple[int, str]:
    """A close frame read by wsproto, as the peer on the other side would read it."""
    protocol = FrameProtocol(client=client, extensions=[])
    protocol.receive_bytes(data)
    frames = list(protocol.received_frames())
    assert len(frames) == 1 and frames[0].opcode is Opcode.CLOSE
    code, reason = frames[0].payload
    return int(code), str(reason)


def test_a_close_frame_to_the_browser_is_unmasked() -> None:
    frame = close_frame(1008, "session ended")
    assert frame[1] & 0x80 == 0
    assert parse_close(frame, client=True) == (1008, "session ended")


def test_a_close_frame_to_the_upstream_is_masked() -> None:
    frame = close_frame(1001, "going away", masked=True)
    assert frame[1] & 0x80
    assert parse_close(frame, client=False) == (1001, "going away")


def test_a_long_reason_is_cut_to_fit_a_control_frame() -> None:
    assert len(close_frame(1000, "x" * 500)) == 2 + 125


def frame(opcode: int, payload: bytes, *, masked: bool = False, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", size)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


@given(
    st.lists(
        st.tuples(st.sampled_from([0x0, 0x1, 0x2, 0x9, 0xA]), st.binary(max_size=70000)),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=30),
)
def test_frame_edges_are_found_however_the_stream_is_cut(
    frames: list[tuple[int, bytes]], masked: bool, cuts: list[int]
) -> None:
    stream = b""
    edges_at = set()
    for opcode, payload in frames:
        stream += frame(opcode, payload, masked=masked)
        edges_at.add(len(stream))
    edges = FrameEdges()
    pos = 0
    cut = iter(cuts * (len(stream) // max(1, min(cuts)) + 2))
    while pos < len(stream):
        size = next(cut)
        piece = stream[pos : pos + size]
        pos += len(piece)
        assert edges.feed(piece) is (pos in edges_at), pos
    assert not edges.closed


def test_a_close_frame_is_noticed_even_split_in_two() -> None:
    edges = FrameEdges()
    data = frame(0x1, b"hi") + close_frame(1000, "bye")
    assert edges.feed(data[:5]) is False
    assert not edges.closed
    assert edges.feed(data[5:]) is True
    assert edges.closed


# -- the watch -----------------------------------------------------------------------------


class FakeSession:
    def __init__(self, sid: str, expires_at: float) -> None:
        self.sid = sid
        self.expires_at = expires_at


class FakeWatcher:
    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.stale = False

    def revokes(self, session: FakeSession) -> bool:
        return session.sid in self.revoked


class Ended:
    def __init__(self, tunnels: Tunnels) -> None:
        self.tunnels = tunnels
        self.made: list[Tunnel] = []

    def tunnel(self, session: FakeSession | None, idle: float = 0.0) -> Tunnel:
        a, b = socket.socketpair()
        tunnel = Tunnel(a, b, session, idle)  # type: ignore[arg-type]
        self.tunnels.open.add(tunnel)
        self.made.append(tunnel)
        return tunnel

    def codes(self) -> list[tuple[int, str] | None]:
        return [tunnel._ending for tunnel in self.made]

    def close(self) -> None:
        for tunnel in self.made:
            tunnel.client.close()
            tunnel.upstream.close()


@pytest.fixture
def watch() -> Any:
    now = [1000.0]
    watcher = FakeWatcher()
    tunnels = Tunnels(watcher, Metrics(), grace=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    ended = Ended(tunnels)
    yield now, watcher, tunnels, ended
    ended.close()


def test_the_watch_ends_revoked_and_expired_sessions_with_1008(watch: Any) -> None:
    now, watcher, tunnels, ended = watch
    ended.tunnel(FakeSession("a", 2000.0))
    ended.tunnel(FakeSession("b", 2000.0))
    ended.tunnel(FakeSession("c", 1500.0))
    ended.tunnel(None)  # a public route: no session to end
    tunnels.check()
    assert ended.codes() == [None, None, None, None]
    watcher.revoked.add("b")
    now[0] = 1500.0
    tunnels.check()
    assert ended.codes() == [None, (1008, "session ended"), (1008, "session ended"), None]


def test_the_watch_fails_closed_when_the_revocations_are_stale(watch: Any) -> None:
    _, watcher, tunnels, ended = watch
    ended.tunnel(FakeSession("a", 2000.0))
    ended.tunnel(None)
    watcher.stale = True
    tunnels.check()
    assert ended.codes() == [(1013, "session store unreachable"), None]


def test_the_watch_ends_idle_tunnels_with_1001(watch: Any) -> None:
    _, _, tunnels, ended = watch
    quiet = ended.tunnel(None, idle=30.0)
    busy = ended.tunnel(None, idle=30.0)
    never = ended.tunnel(None, idle=0.0)
    quiet.active -= 31
    never.active -= 10_000
    tunnels.check()
    assert quiet._ending == (1001, "idle timeout")
    assert busy._ending is None
    assert never._ending is None


def test_ending_twice_keeps_the_first_reason(watch: Any) -> None:
    _, _, _, ended = watch
    tunnel = ended.tunnel(None)
    tunnel.end(1008, "session ended")
    tunnel.end(1001, "server shutting down")
    assert tunnel._ending == (1008, "session ended")


# -- gauges --------------------------------------------------------------------------------


def test_gauges_sum_over_workers_and_a_dead_worker_holds_nothing() -> None:
    metrics = Metrics(slots=2)
    first, second = metrics.assign_slot(), metrics.assign_slot()
    metrics.use_slot(first)
    metrics.add("open_websockets", 3)
    metrics.use_slot(second)
    metrics.add("open_websockets", 2)
    metrics.add("open_streams", 1)
    text = metrics.render().decode()
    assert "# TYPE wechat_gateway_open_websockets gauge" in text
    assert "\nwechat_gateway_open_websockets 5\n" in text
    assert "\nwechat_gateway_open_streams 1\n" in text
    metrics.release_slot(first)
    assert metrics.gauge("open_websockets") == 2
    metrics.add("open_websockets", -2)
    assert metrics.gauge("open_websockets") == 0
