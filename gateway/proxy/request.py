"""What the upstream is sent: the request head, and the client's body as it streams.

The head is built in one pass over the environ: hop-by-hop headers (RFC 9110 7.6.1, and
every name listed in ``Connection``), client copies of identity headers and a client's
forwarding claims are left out, the gateway's cookies are removed from ``Cookie``,
``X-Forwarded-For`` gets the client address appended, ``X-Forwarded-Proto`` /
``X-Forwarded-Host`` describe the public request, and the identity headers come last.

The body is read with the client's framing kept (``Content-Length`` or re-chunked), never
whole, and every failure to read it is the client's, never the upstream's.
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.errors import ParseException

from gateway.errors import (
    BadRequest,
    ClientAborted,
    ClientBodyTimeout,
    PayloadTooLarge,
    RequestBodyError,
)
from gateway.identity.headers import is_client_identity_key

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

# RFC 9110 7.6.1, plus the single-hop proxy authentication pair. Trailer is not hop-by-hop.
HOP_BY_HOP = frozenset(
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
    {
        "host",
        "expect",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    }
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
#: Pieces a streamed request body is read in; a body up to ``SMALL_BODY`` goes with the head.
_CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024
#: The buffer a body of known length is moved through, client socket to upstream socket.
_PASS_BUFFER = 256 * 1024


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
            lower not in HOP_BY_HOP
            and lower not in _request_replaced
            and lower not in _client_forwarding
            and lower != "content-type"
        ):
            plan = (name, lower)
    if len(_plans) < 4096:
        _plans[environ_key] = plan
    return plan


def connection_tokens(value: str | None) -> frozenset[str]:
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
    drop: frozenset[str] = frozenset(),
) -> bytes:
    """The request line and headers for the upstream.

    Client copies of identity headers (``X-WeChat-*``, whatever the case or ``_``/``-``
    spelling: the server maps both to ``HTTP_X_WECHAT_``) are dropped here, on every
    request, and the gateway's own identity headers are added after them.

    HTTP/1.1 requires ``Host``, but an HTTP/1.0 client may leave it out; the upstream then
    gets the public host, the one that client reached.
    """
    connection_listed = connection_tokens(environ.get("HTTP_CONNECTION"))
    lines = [f"{method} {target} HTTP/1.1"]
    host = environ.get("HTTP_HOST") or context.public_host
    lines.append(f"Host: {host}")
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    for key, value in environ.items():
        plan = _plan(key)
        if plan is None or (drop and key in drop):
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
    rid = environ.get("gateway.request_id")
    if rid:
        lines.append(f"X-Request-ID: {rid}")
    for name, value in identity:
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class RequestBody:
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
        #: Set once a byte of the body has been sent on.
        self.started = False
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
        if self.length is not None and self.length <= SMALL_BODY:
            return self._read_exactly(self.length) if self.length else b""
        return None

    def _read(self, size: int) -> bytes:
        self._arm_timeout()
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

    def send_to(self, sock: socket.socket) -> None:
        """Send the whole body to ``sock``, re-framed when chunked. ``started`` is set
        before the first byte goes. Reading fails as the client's error; sending raises
        the socket's own ``OSError``.

        A body of known length under gunicorn goes socket to socket: ``recv_into`` one
        reused buffer, ``sendall`` a view of it. gunicorn's reader would receive into a
        buffer, copy the rest back on every read and hand out a new bytes object each
        time (measured: a 256 MiB upload at a third of the speed)."""
        direct = self._direct_reader()
        if direct is None:
            for piece in self.chunks():
                self.started = True
                sock.sendall(piece)
            return
        body, reader = direct
        client = self._client
        assert client is not None and self.length is not None
        # Until the last byte is read, the connection cannot carry another request.
        body.failed = True
        left = reader.length
        unreader = reader.unreader
        pending = unreader.buf.getvalue()
        if pending:
            # What gunicorn read past the head; anything past the body is the next request.
            unreader.buf = io.BytesIO()
            unreader.buf.write(pending[left:])
            head = pending[:left]
            left -= len(head)
            reader.length = left
            self.started = True
            sock.sendall(head)
        if left:
            self._arm_timeout()
            buffer = memoryview(bytearray(min(left, _PASS_BUFFER)))
            size = len(buffer)
            recv_into = client.recv_into
            sendall = sock.sendall
            while left:
                try:
                    got = recv_into(buffer, size if left >= size else left)
                except TimeoutError:
                    raise ClientBodyTimeout(
                        f"no request body bytes from the client for {self.timeout:g}s"
                    ) from None
                except OSError:
                    raise ClientAborted(
                        "aborted by the client: its connection ended mid-body"
                    ) from None
                if not got:
                    raise ClientAborted("aborted by the client: the body ended before its length")
                left -= got
                reader.length = left
                self.started = True
                sendall(buffer[:got])
        body.failed = False

    def _direct_reader(self) -> tuple[Body, LengthReader] | None:
        """gunicorn's body and its reader, when the body can be read off the socket
        directly: known length, nothing read through them yet."""
        stream = self.stream
        if self.length is None or self._client is None or type(stream) is not Body:
            return None
        reader = stream.reader
        if type(reader) is not LengthReader or stream.buf.tell() or not reader.length:
            return None
        return stream, reader

    def _arm_timeout(self) -> None:
        if not self._timed and self._client is not None:
            self._timed = True
            self._prior_timeout = self._client.gettimeout()
            self._client.settimeout(self.timeout)

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
