"""Cookie name prefixes, end to end: signing in and out of the real ``wechat-gateway serve``
under a ``__Host-`` or ``__Secure-`` ``session.cookie_name``.

Browsers hold these names to RFC 6265bis 4.1.3 and silently drop a cookie that breaks the
rules: ``__Secure-`` needs ``Secure``; ``__Host-`` needs ``Secure``, ``Path=/`` and no
``Domain``. ``PrefixBrowser`` does the same, so a gateway that set its login-state cookie
on ``/_gateway/`` under ``__Host-`` would lose the state and fail the callback, as it would
in a real browser. It also keeps every ``Set-Cookie`` it received, to check each one.

``public_url`` is ``https://``, as these names require, while the test speaks plain HTTP
to the gateway on loopback (TLS would end at a proxy in front of it); ``RawBrowser``
(``tests.helpers.raw_e2e``) sends ``Secure`` cookies over that connection as a browser
would over https. WeChat is the project's simulator (``wechat_app``) and the app is
``raw``, both from ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.helpers.raw_e2e import RawBrowser, WeChat, start_gateway
from tests.helpers.support import free_port
from tests.helpers.upstreams import RawUpstream


def broken_rules(cookie: dict[str, str]) -> list[str]:
    """The rules of its name's prefix a parsed ``Set-Cookie`` breaks (prefixes match in any
    case)."""
    name = cookie["name"].lower()
    broken = []
    if name.startswith(("__secure-", "__host-")) and "secure" not in cookie:
        broken.append("no Secure")
    if name.startswith("__host-"):
        if cookie.get("path") != "/":
            broken.append(f"Path={cookie.get('path')}")
        if "domain" in cookie:
            broken.append("a Domain")
    return broken


@dataclass
class PrefixBrowser(RawBrowser):
    """A ``RawBrowser`` that drops a cookie breaking its prefix's rules, as browsers do, and
    keeps every ``Set-Cookie`` it received (parsed) in ``received``."""

    received: list[dict[str, str]] = field(default_factory=list)

    def _store(self, host: str, parsed: dict[str, str]) -> None:
        self.received.append(parsed)
        if not broken_rules(parsed):
            super()._store(host, parsed)

    def broken(self) -> list[tuple[str, list[str]]]:
        return [(c["name"], broken_rules(c)) for c in self.received if broken_rules(c)]


@dataclass(frozen=True)
class Case:
    cookie_name: str
    host: str  # public_url's host; any name reaches loopback
    cookie_domain: str | None
    login_path: str  # where the login-state cookie is set


CASES = [
    Case("__Host-wg", "127.0.0.1", None, "/"),
    # Matched in any case; __Secure- allows a Domain and a narrower path.
    Case("__secure-wg", "login.example.test", ".example.test", "/_gateway/"),
]


@dataclass
class Deployment:
    case: Case
    public_url: str

    def url(self, path: str) -> str:
        return self.public_url + path


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.cookie_name)
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    wechat_app: WeChat,
    raw: RawUpstream,
) -> Iterator[Deployment]:
    case: Case = request.param
    port = free_port()
    public_url = f"https://{case.host}:{port}"
    session = {"cookie_name": case.cookie_name}
    if case.cookie_domain is not None:
        session["cookie_domain"] = case.cookie_domain
    directory = tmp_path_factory.mktemp("cookie-prefixes")
    with start_gateway(
        directory, wechat_app, raw.url, port, public_url=public_url, session=session
    ):
        yield Deployment(case, public_url)


def test_signing_in_and_out_sets_only_cookies_browsers_keep(
    deployment: Deployment, wechat_app: WeChat
) -> None:
    name = deployment.case.cookie_name
    host = urlsplit(deployment.public_url).hostname or ""
    browser = PrefixBrowser()
    browser.set("app", "1", host)
    target = deployment.url("/app/page?q=1")

    callback = wechat_app.sign_in(browser, target, "alice")

    assert browser.broken() == []
    assert callback.status == 302, (callback.status, callback.text[:300])
    assert callback.location == target
    session = callback.set_cookie(name)
    assert session is not None
    assert session.get("domain") == deployment.case.cookie_domain
    logins = [c for c in browser.received if c["name"] == f"{name}_login"]
    assert logins
    assert {c["path"] for c in logins} == {deployment.case.login_path}

    seen = browser.get(target).echo()
    assert seen.target == "/app/page?q=1"
    assert seen.value("X-WeChat-OpenID") == wechat_app.openid("alice")
    # Both of the gateway's cookies reach it (under __Host- the login state's too, on
    # Path=/); neither goes on to the app.
    assert seen.value("Cookie") == "app=1"

    logout = browser.get(deployment.url("/_gateway/logout"))
    cleared = logout.set_cookie(name)
    assert cleared is not None
    assert cleared["max-age"] == "0"
    assert browser.value_of(name) is None
    assert browser.get(target).status == 302

    assert browser.broken() == []
    assert {c["name"] for c in browser.received} == {name, f"{name}_login"}
    assert all("secure" in cookie for cookie in browser.received)
