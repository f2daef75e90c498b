"""Streaming HTTP/1.1 forwarding from a WSGI request to an upstream app.

This is the hop every authenticated request takes. It is written against sockets and
``Response`` rather than a client library, because a forwarding proxy needs
what libraries try to hide: the raw request target (``%2F`` kept), the client's own framing
(``Content-Length`` or chunked), bodies that are never held whole, compressed bodies left
compressed, several ``Set-Cookie`` kept apart, and no state shared between users (no cookie
jar, no default headers, no proxy settings from the environment).

What it guarantees:

- the upstream gets method, raw path and query byte for byte, ``Host`` unchanged,
  ``X-Forwarded-For`` appended and ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` set;
- hop-by-hop headers (RFC 9110 7.6.1, and every name listed in ``Connection``) are removed
  in both directions;
- a refused or reset upstream is a 502, no response headers within ``timeout`` a 504;
- an upstream that dies mid-body aborts the client's connection, so a short body can
  never pass for a complete one; a client that goes away releases the upstream connection.

Connections are pooled per upstream and per worker process; a pooled connection is checked
for a close by the upstream before reuse, and a bodiless request that meets a stale
connection anyway is retried once on a fresh one.

It does not speak WebSocket or HTTP/2 to upstreams: ``Upgrade`` is hop-by-hop and removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote, urlsplit

from gunicorn.http.errors import ParseException

from gateway.access import AllowList
from gateway.errors import (
    BadRequest,
    ClientAborted,
    ClientBodyTimeout,
    GatewayError,
    PayloadTooLarge,
    RequestBodyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.greenlets import gevent_timeout
from gateway.http1 import ClosedBeforeResponse, IncompleteBody, InvalidResponse, Response
from gateway.identity import is_client_identity_key

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.config import UpstreamSettings

log = logging.getLogger("gateway.proxy")

# RFC 9110 7.6.1, plus the single-hop proxy authentication pair. Trailer is not hop-by-hop.
_hop_by_hop = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Request headers the gateway sets itself or answers at its own hop.
_request_replaced = frozenset(
    {"host", "expect", "content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
)
# Claims about the client or the public request that apps and frameworks believe when they
# come from a proxy. The gateway is that proxy and describes the public request only with
# X-Forwarded-For/-Proto/-Host, so a client's copies of the others never reach the app.
_client_forwarding = frozenset(
    {
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-forwarded-protocol",
        "x-forwarded-server",
        "x-forwarded-prefix",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-forwarded-method",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-url-scheme",
        "front-end-https",
        "x-original-url",
        "x-original-uri",
        "x-original-host",
        "x-original-method",
        "x-rewrite-url",
        "x-host",
    }
)
_CHUNK = 64 * 1024
_STREAM_CHUNK = 256 * 1024
_SMALL_BODY = 64 * 1024
_MAX_IDLE = 64
# Methods a stale connection may make the gateway send twice (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNENCODED = re.compile(r"[\x00-\x20\x7f]")


class UpstreamBroken(ConnectionResetError):
    """The upstream failed after the response started; the client connection must abort.

    It is a ``ConnectionResetError`` on purpose: gunicorn closes the client connection on
    it without logging a traceback, which is exactly the signal a truncated body needs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ECONNRESET, reason)


class _StaleConnection(Exception):
    """A reused connection was closed by the upstream before it answered."""


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class Upstream:
    """One configured upstream: where it is, its timeouts, and its idle connections."""

    def __init__(self, settings: UpstreamSettings, *, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(settings.url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        self.origin = _Origin(scheme, parts.hostname or "", port, parts.path.rstrip("/"))
        self.prefix = settings.prefix
        self.host = settings.host
        self.strip_prefix = settings.strip_prefix
        self.public = settings.public
        self.allow = AllowList(settings.allow) if settings.allow is not None else None
        self.timeout = settings.timeout
        self.read_timeout = settings.read_timeout
        self._idle: deque[socket.socket] = deque()
        self._ssl_context = ssl_context
        if scheme == "https" and ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        # Location headers pointing at these are the upstream's own origin.
        self.own_origins = self._origin_spellings()

    def _origin_spellings(self) -> tuple[str, ...]:
        origin = self.origin
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        spellings = {
            f"{origin.scheme}://{origin.authority}",
            f"{origin.scheme}://{host}:{origin.port}",
        }
        return tuple(sorted(spellings, key=len, reverse=True))

    def forwarded_target(self, target: str) -> str:
        """The request target for the upstream: ``strip_prefix`` removes the prefix."""
        if not self.strip_prefix or self.prefix == "/":
            return target
        rest = target[len(self.prefix.rstrip("/")) :]
        return rest if rest.startswith("/") else "/" + rest

    def matches(self, path: str) -> bool:
        prefix = self.prefix
        if prefix in ("/", path):
            return True
        if not path.startswith(prefix):
            return False
        return prefix.endswith("/") or path[len(prefix)] in "/?"

    def connect(self, *, new: bool = False) -> tuple[socket.socket, bool]:
        """An idle pooled connection that still looks open (unless ``new``), else a new one.

        Every pooled connection is checked, however briefly it was idle: bytes an upstream
        sent after the end it declared (a ``Content-Length`` counted in characters, a body
        after a HEAD answer) would otherwise be read as the next request's answer, which
        may be another user's.
        """
        while not new:
            try:
                sock = self._idle.pop()
            except IndexError:
                break
            if _looks_open(sock):
                return sock, True
            sock.close()
        origin = self.origin
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=self.timeout)
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamUnavailable(f"cannot connect to the upstream ({_reason(exc)})") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl_context is not None:
            try:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=origin.host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise UpstreamUnavailable(f"TLS to the upstream failed ({_reason(exc)})") from None
        return sock, False

    def release(self, sock: socket.socket) -> None:
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _looks_open(sock: socket.socket) -> bool:
    """False when the upstream closed (or wrote to) an idle connection: it cannot be reused.

    An idle HTTP/1.1 connection has nothing to read; anything readable, EOF or bytes after
    the end of the last answer, means it is gone.
    """
    if isinstance(sock, ssl.SSLSocket):
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable
    try:
        sock.settimeout(0)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sendall``, but a head that fits the send buffer costs one call (gevent's
    ``sendall`` asks the socket for its buffer size on every call)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "name not resolved"
    if isinstance(exc, ClosedBeforeResponse):
        return "closed the connection without answering"
    if isinstance(exc, IncompleteBody):
        return "closed the connection mid-body"
    if isinstance(exc, InvalidResponse):
        return f"sent an invalid response ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


class Router:
    """The upstream for a request: those for its ``Host`` first, then the host-less ones;
    among them the longest matching prefix."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.upstreams = sorted(upstreams, key=lambda u: len(u.prefix), reverse=True)
        self._by_host: dict[str | None, list[Upstream]] = {}
        for upstream in self.upstreams:
            self._by_host.setdefault(upstream.host, []).append(upstream)

    def choose(self, path: str, host: str | None = None) -> Upstream | None:
        candidates: list[Upstream] = []
        if host and len(self._by_host) > 1:
            host = host.lower()
            candidates = self._by_host.get(host) or self._by_host.get(_hostname(host)) or []
        fallback: list[Upstream] = self._by_host.get(None, [])
        for upstream in (*candidates, *fallback):
            if upstream.matches(path):
                return upstream
        return None

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()


def _hostname(host: str) -> str:
    """``app.example.com:8443`` -> ``app.example.com`` (IPv6 literals keep their brackets)."""
    if host.endswith("]") or ":" not in host:
        return host
    return host.rsplit(":", 1)[0]


def request_target(environ: WSGIEnvironment) -> str:
    """The request target exactly as the client sent it, in origin form.

    ``PATH_INFO`` is already percent-decoded (``%2F`` would become ``/``), so the raw URI
    from the server is used. Targets a browser would never send are refused here, so that
    nothing downstream has to guess what an ambiguous one means.
    """
    raw: str | None = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,:@!$&'()*+~"
        )
        query = environ.get("QUERY_STRING")
        if query:
            raw = f"{raw}?{query}"
    if not raw.startswith("/"):
        if raw == "*" or "://" not in raw:
            raise BadRequest("the request target must be a path")
        # Absolute form (RFC 9112 3.2.2): only the path and query are forwarded.
        rest = raw.split("://", 1)[1]
        slash = rest.find("/")
        question = rest.find("?")
        if slash == -1 or (question != -1 and question < slash):
            raw = "/" + (rest[question:] if question != -1 else "")
        else:
            raw = rest[slash:]
    path = raw.split("?", 1)[0]
    _check_percent_encoding(path)
    return raw.split("#", 1)[0]


def _check_percent_encoding(path: str) -> None:
    if "%" in path and _BAD_ESCAPE.search(path):
        raise BadRequest("the path has an invalid percent-encoding")
    if not path.isascii() or _UNENCODED.search(path):
        raise BadRequest("the path contains characters that must be percent-encoded")


_plans: dict[str, tuple[str, str] | None] = {}


def _plan(environ_key: str) -> tuple[str, str] | None:
    """What to do with one environ key: ``(Header-Name, lower-case name)`` to copy it, or
    None to leave it out (not a header, a client identity header, hop-by-hop, one the
    gateway sets itself, or a client's forwarding claim). Remembered, since the same keys
    come with every request."""
    if environ_key in _plans:
        return _plans[environ_key]
    plan: tuple[str, str] | None = None
    if environ_key.startswith("HTTP_") and not is_client_identity_key(environ_key):
        # HTTP_X_REQUEST_ID -> X-Request-Id (header names are case-insensitive).
        name = environ_key[5:].replace("_", "-").title()
        lower = name.lower()
        if (
            lower not in _hop_by_hop
            and lower not in _request_replaced
            and lower not in _client_forwarding
            and lower != "content-type"
        ):
            plan = (name, lower)
    if len(_plans) < 4096:
        _plans[environ_key] = plan
    return plan


def _connection_tokens(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.split(",") if token.strip())


@dataclass(frozen=True, slots=True)
class ForwardContext:
    """Per-gateway facts every forwarded request needs."""

    public_url: str
    public_scheme: str
    max_body_size: int
    gateway_cookies: frozenset[str]
    client_body_timeout: float = 60.0

    @property
    def public_host(self) -> str:
        """The authority of ``public_url``: what a client that sent no ``Host`` reached."""
        return self.public_url.split("://", 1)[1]


def filter_cookie_header(value: str, names: frozenset[str]) -> str:
    """The Cookie header without the gateway's own cookies; the app's cookies stay as sent.

    Pairs are separated by ``;``. A server joins repeated ``Cookie`` lines with ``,``, but
    browsers also let a comma stand inside a cookie value, so a comma-separated piece is
    only taken out when it names one of the gateway's cookies; the rest of that pair is
    left alone (``prefs=a,b`` stays whole).
    """
    for name in names:
        if name in value:
            break
    else:
        return value
    if ";" not in value and "," not in value:  # one cookie
        name = value.split("=", 1)[0].strip()
        return value.strip() if name and name not in names else ""
    kept = []
    for part in value.split(";"):
        if "," in part:
            pieces = part.split(",")
            rest = [piece for piece in pieces if piece.split("=", 1)[0].strip() not in names]
            if len(rest) != len(pieces):
                part = ",".join(rest)
        name = part.split("=", 1)[0].strip()
        if name and name not in names:
            kept.append(part.strip())
    return "; ".join(kept)


def set_cookie_name(value: str) -> str:
    """The cookie name a browser reads from a ``Set-Cookie`` value (RFC 6265bis 5.7: up to
    the first ``=`` of the part before any ``;``, blanks trimmed; none without ``=``)."""
    pair = value.split(";", 1)[0]
    name, equals, _ = pair.partition("=")
    return name.strip(" \t") if equals else ""


def build_request_head(
    environ: WSGIEnvironment,
    method: str,
    target: str,
    context: ForwardContext,
    identity: Iterable[tuple[str, str]],
    framing: str,
) -> bytes:
    """The request line and headers for the upstream.

    Client copies of identity headers (``X-WeChat-*``, whatever the case or ``_``/``-``
    spelling: the server maps both to ``HTTP_X_WECHAT_``) are dropped here, on every
    request, and the gateway's own identity headers are added after them.

    HTTP/1.1 requires ``Host``, but an HTTP/1.0 client may leave it out; the upstream then
    gets the public host, the one that client reached.
    """
    connection_listed = _connection_tokens(environ.get("HTTP_CONNECTION"))
    lines = [f"{method} {target} HTTP/1.1"]
    host = environ.get("HTTP_HOST") or context.public_host
    lines.append(f"Host: {host}")
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    for key, value in environ.items():
        plan = _plan(key)
        if plan is None:
            continue
        name, lower = plan
        if lower in connection_listed:
            continue
        if lower == "cookie":
            value = filter_cookie_header(value, context.gateway_cookies)
            if not value:
                continue
        lines.append(f"{name}: {value}")
    if framing:
        lines.append(framing)
    client = environ.get("REMOTE_ADDR")
    # Named in Connection, the client's copy is hop-by-hop: only the client address is sent.
    forwarded_for = (
        None if "x-forwarded-for" in connection_listed else environ.get("HTTP_X_FORWARDED_FOR")
    )
    if client:
        forwarded_for = f"{forwarded_for}, {client}" if forwarded_for else client
    if forwarded_for:
        lines.append(f"X-Forwarded-For: {forwarded_for}")
    lines.append(f"X-Forwarded-Proto: {context.public_scheme}")
    lines.append(f"X-Forwarded-Host: {host}")
    for name, value in identity:
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class _RequestBody:
    """How the client framed its body, and a reader that enforces the size limit.

    Every failure to read the body is the client's and is raised as one (never as an
    upstream failure): a malformed chunked body, a connection closed or reset mid-body, or
    ``client_body_timeout`` without a byte. Under gunicorn the client socket's timeout is
    set for the body and put back by ``done``.
    """

    def __init__(self, environ: WSGIEnvironment, max_size: int, timeout: float) -> None:
        self.stream = environ["wsgi.input"]
        self.max_size = max_size
        self.timeout = timeout
        self._client: socket.socket | None = environ.get("gunicorn.socket")
        self._prior_timeout: float | None = None
        self._timed = False
        length = environ.get("CONTENT_LENGTH")
        self.chunked = False
        self.length: int | None = None
        if length:
            try:
                self.length = int(length)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if self.length < 0:
                raise BadRequest("Content-Length is negative")
            if max_size and self.length > max_size:
                raise PayloadTooLarge(max_size)
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" or (
            environ.get("wsgi.input_terminated") and "HTTP_TRANSFER_ENCODING" in environ
        ):
            self.chunked = True

    @property
    def framing(self) -> str:
        if self.chunked:
            return "Transfer-Encoding: chunked"
        if self.length is not None:
            return f"Content-Length: {self.length}"
        return ""

    @property
    def empty(self) -> bool:
        return not self.chunked and not self.length

    def small(self) -> bytes | None:
        """The whole body if it is short enough to send with the head in one write."""
        if self.length is not None and self.length <= _SMALL_BODY:
            return self._read_exactly(self.length) if self.length else b""
        return None

    def _read(self, size: int) -> bytes:
        if not self._timed and self._client is not None:
            self._timed = True
            self._prior_timeout = self._client.gettimeout()
            self._client.settimeout(self.timeout)
        try:
            data: bytes = self.stream.read(size)
        except TimeoutError:
            raise ClientBodyTimeout(
                f"no request body bytes from the client for {self.timeout:g}s"
            ) from None
        except OSError:
            # gunicorn's NoMoreData is an OSError too: the client closed mid-body.
            raise ClientAborted("aborted by the client: its connection ended mid-body") from None
        except (ParseException, ValueError) as exc:
            raise RequestBodyError(f"malformed request body ({type(exc).__name__})") from None
        return data

    def done(self) -> None:
        """Give the client socket back its own timeout once the body has been read."""
        if self._timed and self._client is not None:
            self._timed = False
            # A client that is gone leaves nothing to restore.
            with contextlib.suppress(OSError):
                self._client.settimeout(self._prior_timeout)

    def _read_exactly(self, size: int) -> bytes:
        data = self._read(size)
        while len(data) < size:
            more = self._read(size - len(data))
            if not more:
                raise ClientAborted("aborted by the client: the body ended before its length")
            data += more
        return data

    def chunks(self) -> Iterator[bytes]:
        """The body as wire-ready pieces: raw for Content-Length, re-framed for chunked."""
        read = self._read
        if self.length is not None:
            left = self.length
            while left:
                data = read(min(left, _CHUNK))
                if not data:
                    raise ClientAborted("aborted by the client: the body ended before its length")
                left -= len(data)
                yield data
            return
        total = 0
        while True:
            data = read(_CHUNK)
            if not data:
                yield b"0\r\n\r\n"
                return
            total += len(data)
            if self.max_size and total > self.max_size:
                raise PayloadTooLarge(self.max_size)
            yield b"%x\r\n%b\r\n" % (len(data), data)


class Forwarder:
    """Sends one WSGI request to its upstream and streams the answer back."""

    def __init__(self, context: ForwardContext) -> None:
        self.context = context
        self._timer = gevent_timeout()

    def __call__(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        upstream: Upstream,
        target: str,
        identity: Iterable[tuple[str, str]] = (),
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        context = self.context
        body = _RequestBody(environ, context.max_body_size, context.client_body_timeout)
        head = build_request_head(
            environ,
            method,
            upstream.origin.base_path + upstream.forwarded_target(target),
            context,
            identity,
            body.framing,
        )
        if body.empty:
            sock, response = self._exchange(upstream, method, head, None)
        else:
            try:
                first = body.small()
                if first is None:
                    sock, response = self._exchange(upstream, method, head, body)
                else:
                    sock, response = self._exchange(upstream, method, head + first, None)
            finally:
                body.done()
        return self._respond(upstream, sock, response, start_response)

    def _exchange(
        self, upstream: Upstream, method: str, payload: bytes, body: _RequestBody | None
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
        body: _RequestBody | None,
        *,
        fresh: bool = False,
    ) -> Response:
        if body is None and self._timer is not None:
            # Under gevent a socket timeout arms a new timer for every wait; one timer for
            # the whole exchange costs a fraction. (A streamed upload keeps the per-send
            # socket timeout: a slow client must not count against the upstream.)
            sock.settimeout(None)
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
        body: _RequestBody | None,
        fresh: bool,
        deadline: float | None,
    ) -> Response:
        sent_body = False
        try:
            send_all(sock, payload)
            if body is not None:
                for piece in body.chunks():
                    sent_body = True
                    send_all(sock, piece)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The upstream may have answered early (e.g. 413) and closed: read that answer.
            if not sent_body and not fresh:
                raise _StaleConnection from None
            send_error: OSError | None = exc
        except TimeoutError:
            sock.close()
            raise UpstreamTimeout("sending the request to the upstream timed out") from None
        except OSError as exc:
            sock.close()
            raise UpstreamUnavailable(f"the upstream connection failed ({_reason(exc)})") from None
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
            if not fresh and send_error is None and not sent_body and method in _IDEMPOTENT:
                raise _StaleConnection from None
            sock.close()
            raise UpstreamUnavailable(f"the upstream {_reason(exc)}") from None
        except (OSError, InvalidResponse) as exc:
            sock.close()
            raise UpstreamUnavailable(f"the upstream {_reason(exc)}") from None
        if response.unknown_coding and not response.bodiless:
            # RFC 9112 6.1: only chunked may be sent to a client that did not ask (TE) for
            # more; passed on undone, a gzip transfer coding would reach the browser as
            # unlabelled compressed bytes.
            sock.close()
            raise UpstreamUnavailable("the upstream used a transfer coding other than chunked")
        return response

    def _respond(
        self,
        upstream: Upstream,
        sock: socket.socket,
        response: Response,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        headers = self._response_headers(upstream, response)
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
            raise UpstreamUnavailable(f"the upstream {_reason(exc)}") from None
        if response.bodiless:
            if response.declared_length is not None:
                headers.append(("Content-Length", str(response.declared_length)))
        elif length is not None:
            headers.append(("Content-Length", str(length)))
        if response.complete:
            _finish(upstream, sock, response)
            start_response(f"{status} {reason}", headers)
            return [first] if first else []
        start_response(f"{status} {reason}", headers)
        return _StreamedBody(upstream, sock, response, first)

    def _response_headers(self, upstream: Upstream, response: Response) -> list[tuple[str, str]]:
        connection_listed = response.connection_tokens
        headers: list[tuple[str, str]] = []
        for (name, value), lower in zip(response.headers, response.lower_names, strict=True):
            if lower in _hop_by_hop or lower == "content-length" or lower in connection_listed:
                continue
            if lower == "location":
                value = self._rewrite_location(upstream, value)
            elif lower == "set-cookie" and set_cookie_name(value) in self.context.gateway_cookies:
                # The app must not replace the gateway's own cookies: that would swap the
                # browser's session for one the app chose.
                log.warning("removed an upstream Set-Cookie for the gateway's own cookie")
                continue
            headers.append((name, value))
        return headers

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

    __slots__ = ("_done", "_first", "_response", "_sock", "_upstream")

    def __init__(
        self, upstream: Upstream, sock: socket.socket, response: Response, first: bytes = b""
    ) -> None:
        self._upstream = upstream
        self._sock = sock
        self._response = response
        self._first = first  # body bytes already read
        self._done = False

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
                self._abort(f"the upstream {_reason(exc)}")
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
        if self._done:
            _finish(self._upstream, self._sock, self._response)
        else:
            self._sock.close()
