"""Socket helpers for the gateway's own HTTP/1.1 client side: writes that cost one system
call when they can, the idle-connection check, and failures named for a log line."""

from __future__ import annotations

import select
import socket
import ssl

from gateway.http.response import ClosedBeforeResponse, IncompleteBody, InvalidResponse

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def looks_open(sock: socket.socket) -> bool:
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
    # Under gevent the system socket inside is asked directly (gevent keeps it
    # non-blocking); a plain socket is made non-blocking first, or a timeout on it would
    # make CPython wait for readability before the peek.
    raw = getattr(sock, "_sock", None)
    if raw is None or raw.gettimeout() != 0.0:
        raw = sock
        sock.settimeout(0)
    try:
        raw.recv(1, _PEEK)
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


def describe_failure(exc: BaseException) -> str:
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
