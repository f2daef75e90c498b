"""Tests for :mod:`gateway.proxy.pool`: an upstream's connections, against a listening
socket the test holds on loopback. A pooled connection is reused only while it still looks
open: one its peer closed, or one with bytes waiting (left over from an earlier answer),
never is."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from gateway.config import UpstreamSettings
from gateway.errors import UpstreamUnavailable
from gateway.proxy.pool import Upstream


class Listener:
    """A listening socket on loopback; ``peer`` accepts the connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.peers: list[socket.socket] = []

    def peer(self) -> socket.socket:
        peer, _ = self.sock.accept()
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


@pytest.fixture
def upstream(listener: Listener) -> Iterator[Upstream]:
    pool = Upstream(UpstreamSettings(prefix="/", url=listener.url, timeout=2))
    yield pool
    pool.close()


def readable(sock: socket.socket) -> None:
    """Wait until ``sock`` has something to read (bytes or EOF), as the pool will see it."""
    ready, _, _ = select.select([sock], [], [], 5)
    assert ready, "nothing arrived"


def test_a_new_connection_reaches_the_upstream(upstream: Upstream, listener: Listener) -> None:
    sock, reused = upstream.connect()
    peer = listener.peer()
    assert not reused
    assert sock.getpeername() == peer.getsockname()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    sock.close()


def test_a_released_connection_is_reused(upstream: Upstream, listener: Listener) -> None:
    sock, _ = upstream.connect()
    listener.peer()
    upstream.release(sock)
    again, reused = upstream.connect()
    assert reused
    assert again is sock
    again.close()


def test_a_pooled_connection_with_bytes_waiting_is_not_reused(
    upstream: Upstream, listener: Listener
) -> None:
    sock, _ = upstream.connect()
    peer = listener.peer()
    upstream.release(sock)
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # an answer nobody asked for
    readable(sock)
    fresh, reused = upstream.connect()
    assert not reused
    assert fresh is not sock
    assert sock.fileno() == -1, "the stale connection was not closed"
    assert fresh.getpeername() == listener.peer().getsockname()
    fresh.close()


def test_a_pooled_connection_closed_by_the_upstream_is_not_reused(
    upstream: Upstream, listener: Listener
) -> None:
    sock, _ = upstream.connect()
    listener.peer().close()
    upstream.release(sock)
    readable(sock)
    fresh, reused = upstream.connect()
    assert not reused
    assert fresh is not sock
    assert sock.fileno() == -1
    fresh.close()


def test_stale_connections_are_skipped_until_one_looks_open(
    upstream: Upstream, listener: Listener
) -> None:
    good, _ = upstream.connect()
    listener.peer()
    stale, _ = upstream.connect()
    listener.peer().close()
    upstream.release(good)
    upstream.release(stale)  # the most recently released is tried first
    readable(stale)
    sock, reused = upstream.connect()
    assert reused
    assert sock is good
    assert stale.fileno() == -1
    sock.close()


def test_new_skips_the_pool(upstream: Upstream, listener: Listener) -> None:
    sock, _ = upstream.connect()
    listener.peer()
    upstream.release(sock)
    fresh, reused = upstream.connect(new=True)
    listener.peer()
    assert not reused
    assert fresh is not sock
    assert upstream.connect() == (sock, True)
    fresh.close()
    sock.close()


def test_the_pool_keeps_at_most_256_idle_connections(upstream: Upstream) -> None:
    pairs = [socket.socketpair() for _ in range(257)]
    try:
        for ours, _ in pairs:
            upstream.release(ours)
        assert pairs[-1][0].fileno() == -1, "the 257th idle connection was kept"
        assert all(ours.fileno() != -1 for ours, _ in pairs[:-1])
        upstream.close()
        assert all(ours.fileno() == -1 for ours, _ in pairs)
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_refused_connection_is_unavailable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connecting is refused
        upstream = Upstream(UpstreamSettings(prefix="/", url=f"http://127.0.0.1:{port}"))
        with pytest.raises(UpstreamUnavailable, match="connection refused") as caught:
            upstream.connect()
    assert caught.value.status == 502
