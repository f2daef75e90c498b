"""What the identity providers' API clients share on the wire: a locked-down HTTP session,
a reply read within a deadline and a size cap, a failure named without its URL, the reading
of a JSON reply and its ``errcode``, and secrets kept out of every log line.

``requests``' own exception texts embed the full request URL (with secrets and codes in
the query), so a transport failure is described only from exception types and OS error
strings (``failure_reason``), never by stringifying the exception.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterable
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Final

import requests
import urllib3.exceptions


class _RedactQuery(logging.Filter):
    """Blank out secrets in urllib3's DEBUG request lines, which include the query string.

    Without it, turning on debug logging would write the app or corp secret and every
    code, token and user ticket to the log.
    """

    _PATTERN: Final = re.compile(
        r"\b(corpsecret|secret|code|access_token|refresh_token|user_ticket)=[^&\s\"]*"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._PATTERN.sub(r"\1=***", message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


# Installed on import: the request lines it protects are the ones the clients make.
_URLLIB3_LOGGER: Final = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _RedactQuery) for f in _URLLIB3_LOGGER.filters):
    _URLLIB3_LOGGER.addFilter(_RedactQuery())

_ERRCODE_TEXT: Final = re.compile(r"-?[0-9]{1,9}")


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


def json_object(raw: bytes) -> dict[str, Any] | None:
    """A reply's JSON object, or None. The declared content type is not relied on (WeChat
    says text/plain), and raw control characters inside strings are accepted (both
    services leave them in names)."""
    try:
        body = json.loads(raw.decode("utf-8", "replace"), strict=False)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def errcode_of(body: dict[str, Any]) -> int | None:
    """The reply's ``errcode`` (0 when absent: the fields the caller needs then decide), or
    None when it is not a number."""
    value = body.get("errcode", 0)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _ERRCODE_TEXT.fullmatch(value):
        return int(value)
    return None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """A service's errmsg is foreign text: make sure it never echoes what was sent."""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text


class RoundTripTimeout(Exception):
    """No whole reply within the round trip's time."""

    def __init__(self, whole: bool) -> None:
        super().__init__("no whole reply" if whole else "no reply")
        #: The reply started but did not finish in time (gevent's timer ended it).
        self.whole = whole


class RoundTripFailed(Exception):
    """No reply: refused, reset, DNS or TLS trouble; ``reason`` says which, never the URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def round_trip(
    session: requests.Session,
    url: str,
    params: Any,
    timeout: float,
    max_body: int,
    timer: Any | None,
) -> tuple[int, bytes]:
    """One GET within ``timeout`` as a whole, however slowly the bytes come: its status
    and at most ``max_body + 1`` bytes of body. Fails only with ``RoundTripTimeout`` or
    ``RoundTripFailed``, raised outside requests' own exceptions, whose texts hold the URL
    (with secrets, codes and tokens in its query) and are never let out or chained.

    requests bounds each socket wait, not the whole reply: a server that trickles could
    hold a sign-in for ever. Under gevent one ``timer`` (its ``Timeout``, not yet started)
    bounds it all; the body is also read against a deadline, which bounds it on threads.
    """
    failure: Exception | None = None
    if timer is not None:
        timer.start()
    try:
        with session.get(
            url,
            params=params,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        ) as resp:
            status = resp.status_code
            raw = read_reply(resp, time.monotonic() + timeout, max_body)
    except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        failure = RoundTripTimeout(whole=False)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        failure = RoundTripFailed(failure_reason(exc))
    except BaseException as exc:
        if timer is None or exc is not timer:
            raise
        failure = RoundTripTimeout(whole=True)
    finally:
        if timer is not None:
            timer.close()
    if failure is not None:
        raise failure
    return status, raw
