"""The connection side of an upstream: its origin, timeouts and pooled idle connections.

Connections are pooled per upstream and per worker process (up to 256 idle). Every pooled
connection is checked with a non-blocking peek before reuse, however briefly it was idle,
so bytes an upstream sent past the end of its last answer are never read as the next one.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.http.origins import Origin, parse_origin
from gateway.http.sockets import describe_failure, looks_open

if TYPE_CHECKING:
    from gateway.config import UpstreamSettings

_MAX_IDLE = 256


class Upstream:
    """Where one configured upstream is, its timeouts, and its idle connections: the
    transport. Which requests go there and who may send them is its ``Route``'s."""

    def __init__(self, settings: UpstreamSettings) -> None:
        origin = parse_origin(settings.url)
        if origin is None:
            raise ValueError("an upstream's url must be an http or https URL with a host")
        self.origin = origin
        #: The path of the upstream's URL, put in front of every target forwarded to it.
        self.base_path = urlsplit(settings.url).path.rstrip("/")
        self.timeout = settings.timeout
        self.read_timeout = settings.read_timeout
        self._idle: deque[socket.socket] = deque()
        self._ssl_context = ssl.create_default_context() if origin.scheme == "https" else None
        # Location headers pointing at these are the upstream's own origin.
        self.own_origins = _spellings(origin)

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
            if looks_open(sock):
                return sock, True
            sock.close()
        origin = self.origin
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=self.timeout)
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamUnavailable(
                f"cannot connect to the upstream ({describe_failure(exc)})"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl_context is not None:
            try:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=origin.host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise UpstreamUnavailable(
                    f"TLS to the upstream failed ({describe_failure(exc)})"
                ) from None
        return sock, False

    def release(self, sock: socket.socket) -> None:
        if len(self._idle) < _MAX_IDLE:
            self._idle.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _spellings(origin: Origin) -> tuple[str, ...]:
    """The ways a URL can write ``origin``, longest first: with the default port too."""
    canonical = origin.serialize()
    if origin.has_default_port:
        return (f"{canonical}:{origin.port}", canonical)
    return (canonical,)
