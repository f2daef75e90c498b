"""What the identity providers' API clients share on the wire: a locked-down HTTP session,
a reply read within a deadline and a size cap, and a failure named without its URL.

``requests``' own exception texts embed the full request URL (with secrets and codes in
the query), so a transport failure is described only from exception types and OS error
strings (``failure_reason``), never by stringifying the exception.
"""

from __future__ import annotations

import socket
import ssl
import time
from http.cookiejar import DefaultCookiePolicy

import requests


def new_session() -> requests.Session:
    """A session for a provider's API: no proxies or .netrc from the environment (not the
    operator's choice for this traffic), no cookies kept (the APIs set none worth keeping)."""
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = "wechat-gateway"
    return session


def read_reply(resp: requests.Response, ends_at: float, max_body: int) -> bytes:
    """The reply's body, at most ``max_body + 1`` bytes (so that "too large" can be told),
    read by ``ends_at`` (monotonic); ``TimeoutError`` if it is still coming then."""
    raw = resp.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    parts: list[bytes] = []
    size = 0
    while size <= max_body:
        left = ends_at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the reply was still coming at the deadline")
        if sock is not None:
            sock.settimeout(left)  # a silent gap ends at the deadline too
        piece = raw.read1(min(max_body + 1 - size, 1 << 16), decode_content=True)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


def failure_reason(exc: BaseException) -> str:
    """A short cause for a transport failure, taken from the innermost OS error.

    The outer exception texts embed the request URL, so only exception types and OS
    error strings are used.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "the host name could not be resolved"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, ConnectionResetError):
            return "connection closed without a reply"
        if isinstance(current, ssl.SSLError):
            return "TLS handshake or certificate failure"
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(current.args)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return f"connection failed ({type(exc).__name__})"
