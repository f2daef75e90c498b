"""WebSocket through the gateway: the handshake relayed, then a tunnel of bytes.

A WebSocket handshake gets the access decision of any request (``gateway.app``); what it
may then do happens here:

1. ``WebSocketProxy.check_origin``: a page of another site may not open a socket with the
   user's cookie (cross-site WebSocket hijacking); only ``public_url``'s origin and the
   route's ``websocket_origins`` may.
2. ``WebSocketProxy.__call__``: the upgrade goes upstream with the identity headers, through
   the forwarder's own exchange (timeouts, a stale pooled connection retried). An answer
   other than ``101`` is passed on as an ordinary response; a ``101`` is checked against the
   client's key, relayed, and the connection becomes a ``Tunnel``.
3. ``Tunnel``: two greenlets copy bytes, one each way, as they come: ``recv`` then
   ``sendall``, so a reader that does not keep up stops its writer (the kernel's socket
   buffers fill, ``sendall`` waits, nothing more is read): at most one read (64 KiB) per
   direction is held in memory, and an idle tunnel holds none. Payloads are never looked
   at; frame headers are read only to know where the gateway may put a close frame.
4. ``Tunnels``: the open tunnels of a worker, and a watch once a second that ends a tunnel
   whose session was revoked, signed out or expired (close code 1008), whose revocation
   data is older than ``state.max_staleness`` (1013), or that was silent both ways for
   ``websocket_idle_timeout`` (1001). On SIGTERM every tunnel gets
   ``server.graceful_timeout``, then 1001.

When the gateway ends a tunnel it sends the browser a close frame if the bytes sent so far
end between two frames (else it can only close the connection), tells the upstream
"going away" the same way, then waits briefly for the browser to close its end. Only the
gevent worker can hold a connection like this; under ``gthread`` a handshake gets 501.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from gateway.errors import CrossSiteWebSocket, UpstreamUnavailable, WebSocketUnsupported
from gateway.http.origins import parse_origin
from gateway.proxy.request import build_request_head
from gateway.proxy.websocket import (
    BAD_GATEWAY,
    GOING_AWAY,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    FrameEdges,
    accept_key,
    close_frame,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.auth.session import Session
    from gateway.http.response import Response
    from gateway.proxy.forward import Forwarder
    from gateway.proxy.router import Route
    from gateway.server.metrics import Metrics
    from gateway.state.watch import RevocationWatcher

log = logging.getLogger("gateway.proxy")

#: The environ key the gateway's worker sets to hand the client connection over: the
#: parser's reader, holding any bytes the client sent after its handshake.
TAKEOVER_KEY = "gateway.unreader"
_READ = 64 * 1024
#: How long a closing side may take: to accept a close frame, to close after one.
_CLOSE_WAIT = 2.0
_HALF_CLOSED_WAIT = 5.0
_WATCH_INTERVAL = 1.0


class TakenOver:
    """What the app returns once a tunnel has ended: nothing more for the server to write.

    The worker recognises it by type, logs the access line with ``status`` and ``sent``
    (bytes sent to the client) and closes the connection."""

    __slots__ = ("sent", "status")

    def __init__(self, status: str, sent: int) -> None:
        self.status = status
        self.sent = sent

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


class Tunnel:
    """One open WebSocket: the client and upstream connections, and whose session it is."""

    __slots__ = (
        "_ending",
        "_notes",
        "_pumps",
        "_wake",
        "active",
        "client",
        "client_edge",
        "expires_at",
        "idle_timeout",
        "sent",
        "session",
        "to_client",
        "to_upstream",
        "upstream",
        "upstream_edge",
    )

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        session: Session | None,
        idle_timeout: float,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.session = session
        self.expires_at = float(session.expires_at) if session is not None else None
        self.idle_timeout = idle_timeout
        self.active = time.monotonic()
        self.sent = 0
        #: Frame edges of each direction, and whether what was sent so far ends on one.
        self.to_client = FrameEdges()
        self.to_upstream = FrameEdges()
        self.client_edge = True
        self.upstream_edge = True
        self._notes: list[tuple[bool, bool]] = []  # (toward the client, failed)
        self._ending: tuple[int, str] | None = None
        self._wake = Event()
        self._pumps: tuple[gevent.Greenlet, ...] = ()

    # -- asked by the watch ------------------------------------------------------------------

    def end(self, code: int, reason: str) -> None:
        """End the tunnel: the browser gets a close frame with ``code`` (when possible)."""
        if self._ending is None:
            self._ending = (code, reason)
            self._wake.set()

    # -- run by the request's greenlet -------------------------------------------------------

    def run(self, from_client: bytes, from_upstream: bytes) -> None:
        self._pumps = (
            gevent.spawn(self._copy, self.client, self.upstream, from_client, False),
            gevent.spawn(self._copy, self.upstream, self.client, from_upstream, True),
        )
        try:
            self._follow()
        finally:
            gevent.killall(self._pumps, timeout=1)
            self.upstream.close()
            self.client.close()

    def _copy(self, src: socket.socket, dst: socket.socket, first: bytes, to_client: bool) -> None:
        """Copy ``src`` to ``dst`` until ``src`` ends; note how it ended. Killed by ``run``
        when the tunnel ends otherwise."""
        edges = self.to_client if to_client else self.to_upstream
        recv = src.recv
        sendall = dst.sendall
        data = first
        failed = False
        try:
            while True:
                if not data:
                    data = recv(_READ)
                    if not data:
                        break
                    self.active = time.monotonic()
                edge = edges.feed(data)
                if to_client:
                    self.client_edge = False
                    sendall(data)
                    self.client_edge = edge
                    self.sent += len(data)
                else:
                    self.upstream_edge = False
                    sendall(data)
                    self.upstream_edge = edge
                data = b""
        except OSError:
            failed = True
        self._notes.append((to_client, failed))
        self._wake.set()

    def _follow(self) -> None:
        """React to what happens until the tunnel is over: one side ending, a failure, or
        the gateway ending it."""
        client_done = upstream_done = False
        wait: float | None = None
        while True:
            if not self._wake.wait(wait):
                return  # a half-closed tunnel whose other side did not follow in time
            self._wake.clear()
            if self._ending is not None:
                self._end_now(*self._ending)
                return
            while self._notes:
                to_client, failed = self._notes.pop(0)
                if failed:
                    # Either connection failed: nothing more can pass. If the upstream's
                    # side is the one that broke, say so to the browser when possible.
                    if to_client:
                        self._to_client_close(BAD_GATEWAY, "upstream connection failed")
                    return
                if to_client:
                    upstream_done = True
                    self._to_client_close(BAD_GATEWAY, "upstream closed")
                    _shut(self.client)
                else:
                    client_done = True
                    _shut(self.upstream)
                if client_done and upstream_done:
                    return
                wait = _HALF_CLOSED_WAIT

    def _to_client_close(self, code: int, reason: str) -> None:
        """A close frame to the browser, unless one went already or a frame is half sent."""
        if self.client_edge and not self.to_client.closed:
            self.to_client.closed = True
            _send_within(self.client, close_frame(code, reason), _CLOSE_WAIT)

    def _end_now(self, code: int, reason: str) -> None:
        # The pumps stop first, so nothing is sent between the edge check and the frame.
        gevent.killall(self._pumps, timeout=1)
        self._to_client_close(code, reason)
        if self.upstream_edge and not self.to_upstream.closed:
            self.to_upstream.closed = True
            _send_within(
                self.upstream, close_frame(GOING_AWAY, "going away", masked=True), _CLOSE_WAIT
            )
        _shut(self.upstream)
        _shut(self.client)
        _drain(self.client, _CLOSE_WAIT)


def _shut(sock: socket.socket) -> None:
    """No more bytes from us on ``sock`` (the peer reads the end of the stream)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _send_within(sock: socket.socket, data: bytes, seconds: float) -> None:
    with gevent.Timeout(seconds, False), contextlib.suppress(OSError):
        sock.sendall(data)


def _drain(sock: socket.socket, seconds: float) -> None:
    """Read and drop what the peer still sends until it closes, for at most ``seconds``:
    closing with unread bytes would reset the connection, and a reset may destroy the
    close frame before the browser reads it."""
    with gevent.Timeout(seconds, False), contextlib.suppress(OSError):
        while sock.recv(_READ):
            pass


class Tunnels:
    """The open tunnels of one worker, and the watch that ends them when they must end."""

    def __init__(
        self,
        watcher: RevocationWatcher | None,
        metrics: Metrics,
        *,
        grace: float,
        clock: Callable[[], float] = time.time,
        interval: float = _WATCH_INTERVAL,
    ) -> None:
        self.watcher = watcher
        self.metrics = metrics
        self.grace = grace
        self.clock = clock
        self.interval = interval
        self.open: set[Tunnel] = set()
        self._watch: gevent.Greenlet | None = None

    def run(self, tunnel: Tunnel, from_client: bytes, from_upstream: bytes) -> None:
        """Hold ``tunnel`` open until it ends, counted and watched meanwhile."""
        self.open.add(tunnel)
        self.metrics.add("open_websockets", 1)
        if self._watch is None or self._watch.dead:
            self._watch = gevent.spawn(self._watch_loop)
        try:
            tunnel.run(from_client, from_upstream)
        finally:
            self.open.discard(tunnel)
            self.metrics.add("open_websockets", -1)

    def end_all(self, code: int, reason: str) -> None:
        for tunnel in list(self.open):
            tunnel.end(code, reason)

    def stopping(self) -> None:
        """The worker is stopping (SIGTERM): open tunnels get ``grace``, then 1001."""

        def later() -> None:
            gevent.sleep(self.grace)
            self.end_all(GOING_AWAY, "server shutting down")

        gevent.spawn(later)

    def check(self) -> None:
        """One round of the watch: end what must end."""
        watcher = self.watcher
        now = self.clock()
        idle_since = time.monotonic()
        stale = watcher is not None and watcher.stale
        for tunnel in list(self.open):
            session = tunnel.session
            if session is not None:
                assert tunnel.expires_at is not None
                if now >= tunnel.expires_at or (watcher is not None and watcher.revokes(session)):
                    tunnel.end(POLICY_VIOLATION, "session ended")
                    continue
                if stale:
                    tunnel.end(TRY_AGAIN_LATER, "session store unreachable")
                    continue
            if tunnel.idle_timeout and idle_since - tunnel.active >= tunnel.idle_timeout:
                tunnel.end(GOING_AWAY, "idle timeout")

    def _watch_loop(self) -> None:
        while self.open:
            gevent.sleep(self.interval)
            try:
                self.check()
            except Exception:  # the watch must outlive any one bad round
                log.exception("checking the open WebSockets failed")


class WebSocketProxy:
    """A checked WebSocket handshake, forwarded; a ``101`` becomes a tunnel."""

    def __init__(self, forward: Forwarder, tunnels: Tunnels, public_url: str) -> None:
        self.forward = forward
        self.tunnels = tunnels
        origin = parse_origin(public_url)
        self.public_origin = origin.serialize() if origin is not None else public_url

    def check_origin(self, environ: WSGIEnvironment, route: Route) -> None:
        """A browser names the page that opens a socket in ``Origin``; the user's cookie is
        sent whatever that page is, so only the gateway's own origin and the route's listed
        ones may. Clients that are not browsers send no ``Origin``."""
        value = environ.get("HTTP_ORIGIN")
        if value is None:
            return
        origin = parse_origin(value.strip(), bare=True)
        serialized = origin.serialize() if origin is not None else None
        if serialized != self.public_origin and serialized not in route.websocket_origins:
            raise CrossSiteWebSocket("WebSocket from another origin refused")

    def __call__(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        route: Route,
        target: str,
        identity: Iterable[tuple[str, str]],
        session: Session | None,
        set_cookie: tuple[str, str] | None,
    ) -> Iterable[bytes]:
        unreader = environ.get(TAKEOVER_KEY)
        client: socket.socket | None = environ.get("gunicorn.socket")
        if unreader is None or client is None:
            raise WebSocketUnsupported("WebSocket needs the gevent worker")
        forward = self.forward
        upstream = route.upstream
        head = build_request_head(
            environ,
            "GET",
            upstream.base_path + route.forwarded_target(target),
            forward.context,
            [*identity, ("Connection", "Upgrade"), ("Upgrade", "websocket")],
            "",
            route.drop_keys,
        )
        sock, response = forward.exchange(upstream, "GET", head, None)
        if response.status != 101:
            return forward.respond(upstream, sock, response, start_response)
        try:
            self._check_switch(response, environ["HTTP_SEC_WEBSOCKET_KEY"])
        except UpstreamUnavailable:
            sock.close()
            raise
        headers = forward.response_headers(upstream, response)
        if set_cookie is not None:
            headers.append(set_cookie)
        rid = environ.get("gateway.request_id")
        if rid:
            headers.append(("X-Request-ID", rid))
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            *(f"{name}: {value}" for name, value in headers),
            "\r\n",
        ]
        from_upstream = response.take_buffered()
        sock.settimeout(None)
        tunnel = Tunnel(client, sock, session, route.websocket_idle_timeout)
        try:
            client.sendall("\r\n".join(lines).encode("latin-1"))
        except OSError:
            sock.close()
            return TakenOver("101 Switching Protocols", 0)
        self.tunnels.run(tunnel, unreader.take_buffered(), from_upstream)
        return TakenOver("101 Switching Protocols", tunnel.sent)

    @staticmethod
    def _check_switch(response: Response, key: str) -> None:
        """The upstream's ``101`` must be a WebSocket's, for this handshake."""
        upgrade = accept = ""
        for (_, value), lower in zip(response.headers, response.lower_names, strict=True):
            if lower == "upgrade":
                upgrade = value.strip().lower()
            elif lower == "sec-websocket-accept":
                accept = value.strip()
        if upgrade != "websocket" or "upgrade" not in response.connection_tokens:
            raise UpstreamUnavailable("the upstream switched protocols, but not to WebSocket")
        if accept != accept_key(key):
            raise UpstreamUnavailable("the upstream answered the WebSocket handshake wrongly")
