"""Streaming HTTP/1.1 forwarding from a WSGI request to an upstream app.

This is the hop every authenticated request takes. It is written against sockets and
``Response`` rather than a client library, because a forwarding proxy needs
what libraries try to hide: the raw request target (``%2F`` kept), the client's own framing
(``Content-Length`` or chunked), bodies that are never held whole, compressed bodies left
compressed, several ``Set-Cookie`` kept apart, and no state shared between users (no cookie
jar, no default headers, no proxy settings from the environment).

What it guarantees:

- a refused or reset upstream is a 502, no response headers within ``timeout`` a 504;
- an upstream that dies mid-body aborts the client's connection, so a short body can
  never pass for a complete one; a client that goes away releases the upstream connection;
- a bodiless request that meets a stale pooled connection is retried once on a fresh one;
- an app's ``Set-Cookie`` for one of the gateway's own cookies never reaches the browser.

``Upgrade`` is hop-by-hop and removed here; a WebSocket handshake takes the same exchange
and then becomes a tunnel (``gateway.proxy.tunnel``). It does not speak HTTP/2 to upstreams.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, NoReturn

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.http.response import ClosedBeforeResponse, IncompleteBody, InvalidResponse, Response
from gateway.http.sockets import describe_failure, send_all
from gateway.proxy.request import (
    HOP_BY_HOP,
    ForwardContext,
    RequestBody,
    build_request_head,
    set_cookie_name,
)
from gateway.server.greenlets import gevent_timeout

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.proxy.pool import Upstream
    from gateway.proxy.router import Route
    from gateway.server.metrics import Metrics

    StartProxied = Callable[[str, int, list[tuple[str, str]], int | None, frozenset[str]], None]

log = logging.getLogger("gateway.proxy")

_STREAM_CHUNK = 256 * 1024
# Content-Length is set from the framing; the gateway's own X-Request-ID goes back to the
# client, not the app's; gunicorn drops a "Trailers" field as hop-by-hop, and so does this.
_NOT_PASSED_BACK = frozenset({"content-length", "x-request-id", "trailers"})
# The upstream's Server and Date are kept (gunicorn would replace them with its own).
_SERVER_FIELDS = frozenset({"server", "date"})
#: The environ key of ``start_response`` for a head this module checked (the gateway's
#: worker sets it: ``GatewayResponse.start_proxied``); without it, ``start_response``.
START_PROXIED = "gateway.start_proxied"
# Methods a stale connection may make the gateway send twice (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamBroken(ConnectionResetError):
    """The upstream failed after the response started; the client connection must abort.

    It is a ``ConnectionResetError`` on purpose: gunicorn closes the client connection on
    it without logging a traceback, which is exactly the signal a truncated body needs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ECONNRESET, reason)


class _StaleConnection(Exception):
    """A reused connection was closed by the upstream before it answered."""


class Forwarder:
    """Sends one WSGI request to its upstream and streams the answer back."""

    def __init__(self, context: ForwardContext, metrics: Metrics | None = None) -> None:
        self.context = context
        self.metrics = metrics
        self._timer = gevent_timeout()

    def __call__(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        route: Route,
        target: str,
        identity: Iterable[tuple[str, str]] = (),
        extra: Iterable[tuple[str, str]] = (),
    ) -> Iterable[bytes]:
        """Forward the request; ``extra`` are the gateway's own response fields (its
        X-Request-ID, a re-issued session cookie), added after the upstream's."""
        method = environ["REQUEST_METHOD"]
        context = self.context
        upstream = route.upstream
        body = RequestBody(environ, context.max_body_size, context.client_body_timeout)
        head = build_request_head(
            environ,
            method,
            upstream.base_path + route.forwarded_target(target),
            context,
            identity,
            body.framing,
            route.drop_keys,
        )
        started = perf_counter()
        if body.empty:
            sock, response = self.exchange(upstream, method, head, None)
        else:
            try:
                first = body.small()
                if first is None:
                    sock, response = self.exchange(upstream, method, head, body)
                else:
                    sock, response = self.exchange(upstream, method, head + first, None)
            finally:
                body.done()
        if self.metrics is not None:
            self.metrics.observe("upstream_response_seconds", perf_counter() - started)
        return self.respond(
            upstream, sock, response, start_response, extra, environ.get(START_PROXIED)
        )

    def exchange(
        self, upstream: Upstream, method: str, payload: bytes, body: RequestBody | None
    ) -> tuple[socket.socket, Response]:
        """Send the request, wait for the response head; retry once on a stale connection."""
        sock, reused = upstream.connect()
        try:
            return sock, self._send_and_begin(
                upstream, sock, method, payload, body, fresh=not reused
            )
        except _StaleConnection:
            sock.close()
            if body is not None and not body.empty:
                raise UpstreamUnavailable("the upstream closed the connection") from None
        sock, _ = upstream.connect(new=True)
        try:
            return sock, self._send_and_begin(upstream, sock, method, payload, body, fresh=True)
        except _StaleConnection:
            sock.close()
            raise UpstreamUnavailable(
                "the upstream closed the connection without answering"
            ) from None

    def _send_and_begin(
        self,
        upstream: Upstream,
        sock: socket.socket,
        method: str,
        payload: bytes,
        body: RequestBody | None,
        *,
        fresh: bool = False,
    ) -> Response:
        if body is None and self._timer is not None:
            # Under gevent a socket timeout arms a new timer for every wait; one timer for
            # the whole exchange costs a fraction. (A streamed upload keeps the per-send
            # socket timeout: a slow client must not count against the upstream.)
            sock.settimeout(None)
            # A new timer each time: libev keeps a stopped timer's time left, not its
            # interval, so one started again would fire early (measured: a 504 "within 30s"
            # after milliseconds, once enough exchanges had reused it).
            timer = self._timer(upstream.timeout, TimeoutError)
            timer.start()
            try:
                return self._exchange_once(upstream, sock, method, payload, None, fresh, None)
            finally:
                timer.close()
        sock.settimeout(upstream.timeout)
        deadline = time.monotonic() + upstream.timeout
        return self._exchange_once(upstream, sock, method, payload, body, fresh, deadline)

    def _exchange_once(
        self,
        upstream: Upstream,
        sock: socket.socket,
        method: str,
        payload: bytes,
        body: RequestBody | None,
        fresh: bool,
        deadline: float | None,
    ) -> Response:
        try:
            send_all(sock, payload)
            if body is not None:
                body.send_to(sock)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The upstream may have answered early (e.g. 413) and closed: read that answer.
            if not (body is not None and body.started) and not fresh:
                raise _StaleConnection from None
            send_error: OSError | None = exc
        except TimeoutError:
            sock.close()
            raise UpstreamTimeout("sending the request to the upstream timed out") from None
        except OSError as exc:
            sock.close()
            raise UpstreamUnavailable(
                f"the upstream connection failed ({describe_failure(exc)})"
            ) from None
        except GatewayError:
            sock.close()
            raise
        else:
            send_error = None
        try:
            response = Response(sock, method, deadline=deadline)
        except TimeoutError:
            sock.close()
            raise UpstreamTimeout(
                f"the upstream sent no response headers within {upstream.timeout:g}s"
            ) from None
        except (ClosedBeforeResponse, ConnectionResetError) as exc:
            # Closed after taking the request: a retry is safe only if sending it twice is.
            sent_body = body is not None and body.started
            if not fresh and send_error is None and not sent_body and method in _IDEMPOTENT:
                raise _StaleConnection from None
            sock.close()
            raise UpstreamUnavailable(f"the upstream {describe_failure(exc)}") from None
        except (OSError, InvalidResponse) as exc:
            sock.close()
            raise UpstreamUnavailable(f"the upstream {describe_failure(exc)}") from None
        if response.unknown_coding and not response.bodiless:
            # RFC 9112 6.1: only chunked may be sent to a client that did not ask (TE) for
            # more; passed on undone, a gzip transfer coding would reach the browser as
            # unlabelled compressed bytes.
            sock.close()
            raise UpstreamUnavailable("the upstream used a transfer coding other than chunked")
        return response

    def respond(
        self,
        upstream: Upstream,
        sock: socket.socket,
        response: Response,
        start_response: StartResponse,
        extra: Iterable[tuple[str, str]] = (),
        start_proxied: StartProxied | None = None,
    ) -> Iterable[bytes]:
        headers, own = self._split_headers(upstream, response)
        status = response.status
        reason = response.reason or _phrase(status)
        sock.settimeout(upstream.read_timeout)
        length = response.length
        # The first read happens before anything is sent, so an upstream that fails before
        # its first body byte still gets a clean 502/504. An answer that is complete after
        # it (the usual small one) goes out in one piece, its connection back in the pool
        # first; the rest (trickling, large, chunked, until close) streams as it arrives.
        try:
            first = response.read1(_STREAM_CHUNK)
        except TimeoutError:
            sock.close()
            raise UpstreamTimeout("the upstream stalled before the body") from None
        except (OSError, IncompleteBody, InvalidResponse) as exc:
            sock.close()
            raise UpstreamUnavailable(f"the upstream {describe_failure(exc)}") from None
        stated = response.declared_length if response.bodiless else length
        if stated is not None:
            headers.append(("Content-Length", str(stated)))
        headers.extend(extra)
        headers.extend(own)
        if response.complete:
            _finish(upstream, sock, response)
        if start_proxied is None:
            start_response(f"{status} {reason}", headers)
        else:
            app_fields = frozenset(name.lower() for name, _ in own) if own else frozenset()
            start_proxied(f"{status} {reason}", status, headers, stated, app_fields)
        if response.complete:
            return [first] if first else []
        return _StreamedBody(upstream, sock, response, first, self.metrics)

    def response_headers(self, upstream: Upstream, response: Response) -> list[tuple[str, str]]:
        """The upstream's fields the client gets (the upstream's Server and Date last)."""
        headers, own = self._split_headers(upstream, response)
        headers.extend(own)
        return headers

    def _split_headers(
        self, upstream: Upstream, response: Response
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        connection_listed = response.connection_tokens
        headers: list[tuple[str, str]] = []
        own: list[tuple[str, str]] = []
        for (name, value), lower in zip(response.headers, response.lower_names, strict=True):
            if lower in HOP_BY_HOP or lower in _NOT_PASSED_BACK or lower in connection_listed:
                continue
            if lower in _SERVER_FIELDS:
                own.append((name, value))
                continue
            if lower == "location":
                value = self._rewrite_location(upstream, value)
            elif lower == "set-cookie" and set_cookie_name(value) in self.context.gateway_cookies:
                # The app must not replace the gateway's own cookies: that would swap the
                # browser's session for one the app chose.
                log.warning("removed an upstream Set-Cookie for the gateway's own cookie")
                continue
            headers.append((name, value))
        return headers, own

    def _rewrite_location(self, upstream: Upstream, value: str) -> str:
        lowered = value.lower()
        for origin in upstream.own_origins:
            if lowered.startswith(origin.lower()):
                rest = value[len(origin) :]
                if not rest or rest[0] in "/?#":
                    return self.context.public_url + (rest if rest[:1] == "/" else "/" + rest)
        return value


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _finish(upstream: Upstream, sock: socket.socket, response: Response) -> None:
    """Pool the connection if the upstream lets it live and the response was fully read."""
    if response.reusable:
        upstream.release(sock)
    else:
        sock.close()


class _StreamedBody:
    """A response body forwarded as the bytes arrive.

    ``read1`` returns whatever one read yields, so a trickling upstream (server-sent
    events) reaches the client at once. ``close`` is called by the server even when the
    client disconnected, which is what releases the upstream connection.
    """

    __slots__ = ("_done", "_first", "_metrics", "_response", "_sock", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        sock: socket.socket,
        response: Response,
        first: bytes = b"",
        metrics: Metrics | None = None,
    ) -> None:
        self._upstream = upstream
        self._sock = sock
        self._response = response
        self._first = first  # body bytes already read
        self._done = False
        self._metrics = metrics
        if metrics is not None:
            metrics.add("open_streams", 1)

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        read1 = response.read1
        if self._first:
            yield self._first
        while True:
            try:
                data = read1(_STREAM_CHUNK)
            except TimeoutError:
                self._abort("the upstream stalled mid-body")
            except (OSError, IncompleteBody, InvalidResponse) as exc:
                self._abort(f"the upstream {describe_failure(exc)}")
            if not data:
                break
            yield data
        self._done = True

    def _abort(self, reason: str) -> NoReturn:
        log.warning("aborting the client response: %s", reason)
        self._sock.close()
        self._done = False
        raise UpstreamBroken(reason)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.add("open_streams", -1)
            self._metrics = None
        if self._done:
            _finish(self._upstream, self._sock, self._response)
        else:
            self._sock.close()
