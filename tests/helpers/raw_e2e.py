"""Raw-socket clients for end-to-end tests, and the simulated WeChat they sign in with.

``send`` writes one request on a fresh connection exactly as given and reads the ``Reply``
(``send_url`` for an absolute URL whose host resolves to loopback, ``*.test`` names too);
``RawBrowser`` keeps cookies by name, domain and path on top of it and follows no redirect.
Paths and headers reach the gateway as written: HTTP libraries normalise ``/../`` and
merge header spellings.

``WeChat`` is the simulator seen through its website app: openids, minted session cookies,
the gateway's ``wechat`` settings and a sign-in hop by hop; ``start_gateway`` starts a
gateway that uses it. ``IDENTITY_HEADERS`` and ``SPOOFS`` are the identity headers, and
every way a client might spell them.

Used by ``test_access``, ``test_cookie_prefixes``, ``test_forward_auth`` and
``test_nginx`` in ``tests/e2e``; the ``requests`` counterpart is ``tests.helpers.e2e``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.simulator import SimulatorServer
from tests.helpers.support import (
    HTML_ACCEPT,
    GatewayProcess,
    HeaderLookup,
    base_config,
    free_port,
    session_cookie,
)
from tests.helpers.upstreams import Seen

IDENTITY_HEADERS = (
    "X-WeChat-OpenID",
    "X-WeChat-AppID",
    "X-WeChat-UnionID",
    "X-WeChat-Nickname",
    "X-WeChat-Avatar",
    "X-WeChat-Provider",
)

#: Every way a client might spell an identity header.
SPOOFS = [
    ("X-WeChat-OpenID", "spoof-a"),
    ("x-wechat-openid", "spoof-b"),
    ("X-WECHAT-OPENID", "spoof-c"),
    ("X-Wechat-Openid", "spoof-d"),
    ("X_WeChat_OpenID", "spoof-e"),
    ("x_wechat_openid", "spoof-f"),
    ("X-Wechat_Openid", "spoof-g"),
    ("X_WECHAT-OPENID", "spoof-h"),
    ("X-WeChat-UnionID", "spoof-i"),
    ("X_WeChat_UnionID", "spoof-j"),
    ("X-WeChat-AppID", "spoof-k"),
    ("X-WeChat-Nickname", "spoof-l"),
    ("X-WeChat-Avatar", "https://spoof-m.example/a.png"),
    ("X-WeChat-Anything-Else", "spoof-n"),
    ("X-WeChat-Provider", "wecom"),
    ("X-WeChat-UserID", "spoof-boss"),
    ("X_WeChat_UserID", "spoof-boss2"),
    ("X-WeChat-CorpID", "wwspoof"),
    ("X-WeChat-Departments", "1"),
    ("X-WeChat-Groups", "admins"),
    ("X-WeChat-Assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib3NzIn0."),
    ("X-WeChat-OpenID", ""),
    ("X-WeChat-OpenID", "spoof-o, spoof-p"),
]


# --- a raw HTTP/1.1 client ------------------------------------------------------------------


@dataclass
class Reply(HeaderLookup):
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        assert self.status in (301, 302, 303, 307), (self.status, self.text[:300])
        value = self.value("Location")
        assert value is not None
        return value

    def json(self) -> dict[str, Any]:
        assert (self.value("Content-Type") or "").startswith("application/json"), self.headers
        result: dict[str, Any] = json.loads(self.body)
        return result

    def echo(self) -> Seen:
        """The request as the app (a ``RawUpstream`` echoing it) received it."""
        assert self.status == 200, (self.status, self.text[:500])
        head, _, wire = self.body.partition(b"\r\n\r\n")
        return Seen(head, wire, wire, 0)

    def set_cookie(self, name: str) -> dict[str, str] | None:
        """The ``Set-Cookie`` for ``name``: ``value`` and lower-cased attributes."""
        found = [c for c in map(parse_set_cookie, self.values("Set-Cookie")) if c["name"] == name]
        assert len(found) <= 1, f"{name} set {len(found)} times"
        return found[0] if found else None


def parse_set_cookie(header: str) -> dict[str, str]:
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    cookie = {"name": name, "value": value}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        cookie[key.strip().lower()] = val.strip()
    return cookie


def send(
    port: int,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    host: str | None = None,
    body: bytes = b"",
    timeout: float = 15,
) -> Reply:
    """One request on a fresh connection, written exactly as given; ``Host`` defaults to
    the loopback address (pass ``host=""`` to send none)."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host != "":
        lines.append(f"Host: {host or f'127.0.0.1:{port}'}")
    lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = [tuple(part.strip() for part in line.split(":", 1)) for line in fields]
    reply = Reply(int(status_line.split(" ")[1]), [(n, v) for n, v in parsed], rest)
    if method == "HEAD" or reply.status in (204, 304):
        reply.body = b""
    elif (reply.value("Transfer-Encoding") or "").lower() == "chunked":
        reply.body = _dechunk(rest)
    elif reply.value("Content-Length") is not None:
        reply.body = rest[: int(reply.value("Content-Length") or 0)]
    return reply


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def send_url(url: str, headers: Sequence[tuple[str, str]] = (), **kwargs: Any) -> Reply:
    """``send`` to an absolute URL whose host resolves to loopback (``*.test`` names too)."""
    parts = urlsplit(url)
    assert parts.port is not None, url
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return send(parts.port, target, headers, host=parts.netloc, **kwargs)


# --- a browser, as far as cookies go ----------------------------------------------------------


@dataclass
class _Cookie:
    name: str
    value: str
    host: str  # the host that set it
    domain: str | None  # Domain attribute, without the leading dot
    path: str


@dataclass
class RawBrowser:
    """Keeps cookies by name, domain and path (RFC 6265, as far as the tests need) and
    follows no redirect on its own. Every request goes to loopback with the URL's host in
    ``Host``."""

    accept: str = HTML_ACCEPT
    cookies: list[_Cookie] = field(default_factory=list)

    def cookie_header(self, host: str, path: str) -> str:
        def matches(cookie: _Cookie) -> bool:
            if cookie.domain is None:
                host_ok = cookie.host == host
            else:
                host_ok = host == cookie.domain or host.endswith("." + cookie.domain)
            return host_ok and path.startswith(cookie.path)

        return "; ".join(f"{c.name}={c.value}" for c in self.cookies if matches(c))

    def get(self, url: str, headers: Sequence[tuple[str, str]] = (), **kwargs: Any) -> Reply:
        parts = urlsplit(url)
        host = parts.hostname or ""
        sent = [("Accept", self.accept), ("Accept-Language", "en"), *headers]
        cookie = self.cookie_header(host, parts.path or "/")
        if cookie:
            sent.append(("Cookie", cookie))
        reply = send_url(url, sent, **kwargs)
        for header in reply.values("Set-Cookie"):
            self._store(host, parse_set_cookie(header))
        return reply

    def _store(self, host: str, parsed: dict[str, str]) -> None:
        domain = parsed.get("domain", "").lstrip(".").lower() or None
        path = parsed.get("path", "/")
        self.cookies = [
            c
            for c in self.cookies
            if (c.name, c.domain, c.path) != (parsed["name"], domain, path)
            or (domain is None and c.host != host)
        ]
        if parsed.get("max-age") != "0" and parsed["value"]:
            self.cookies.append(_Cookie(parsed["name"], parsed["value"], host, domain, path))

    def set(self, name: str, value: str, host: str) -> None:
        self.cookies.append(_Cookie(name, value, host, None, "/"))

    def value_of(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)


def rd_of(url: str) -> str:
    """The ``rd`` a login URL carries (``/`` when it has none)."""
    return parse_qs(urlsplit(url).query).get("rd", ["/"])[0]


# --- WeChat, simulated ----------------------------------------------------------------------


class WeChat:
    """The simulator on a socket, and what the tests need from it."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.simulator = server.simulator
        self.app = self.simulator.app_of_kind("website")

    def openid(self, user: str) -> str:
        return self.simulator.openid(self.app.app_id, user)

    def unionid(self, user: str) -> str:
        return self.simulator.unionid(user)

    def settings(self) -> dict[str, Any]:
        return {
            "app_id": self.app.app_id,
            "app_secret": self.app.app_secret,
            "open_base": self.server.url,
            "api_base": self.server.url,
            "timeout": 2,
        }

    def cookie(self, user: str) -> str:
        """A session cookie value for ``user``, as a login would have set it."""
        return session_cookie(self.openid(user), unionid=self.unionid(user), app_id=self.app.app_id)

    def sign_in(
        self,
        browser: RawBrowser,
        login_url: str,
        user: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """From a login URL (``/_gateway/login``, or any URL that redirects there) through
        WeChat as ``user``; the callback's reply. ``headers`` go with the first request."""
        start = browser.get(login_url, headers)
        if "/_gateway/login" in start.location:
            start = browser.get(start.location)
        authorize = start.location.split("#", 1)[0]
        assert authorize.startswith(self.server.url + "/connect/qrconnect?"), authorize
        confirmed = send_url(authorize + f"&sim_user={user}")
        callback = confirmed.location
        assert "/_gateway/callback?" in callback, callback
        return browser.get(callback)


def start_gateway(
    tmp: Path, wechat: WeChat, upstream: str, port: int | None = None, **overrides: Any
) -> GatewayProcess:
    port = port or free_port()
    overrides["wechat"] = {**wechat.settings(), **overrides.get("wechat", {})}
    return GatewayProcess(base_config(port, upstream, **overrides), tmp)
