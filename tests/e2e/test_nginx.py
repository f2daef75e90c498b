"""nginx ``auth_request`` in front of an app, with the gateway answering: the shipped
``config/nginx-auth-request.conf``, run for real.

The site file is taken as an operator would take it: its three ``EDIT`` lines get this
test's addresses, and it is included from a minimal ``nginx.conf`` that keeps every path
nginx writes in a temporary directory. nginx runs in the foreground as the current user.
Behind it: the app (``RawUpstream``, which echoes the request it received), the real
``wechat-gateway serve`` (``public_url`` is nginx's origin; it trusts loopback, where nginx
connects from) and the WeChat simulator. A browser signs in through nginx hop by hop.

``make test`` installs nginx when it is missing; without it this module fails, it does not
skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.helpers.nginx import Nginx
from tests.helpers.raw_e2e import SPOOFS, RawBrowser, Reply, WeChat, send, send_url, start_gateway
from tests.helpers.support import (
    COOKIE,
    HTML_ACCEPT,
    GatewayProcess,
    free_port,
    links,
)
from tests.helpers.upstreams import RawUpstream, Seen, is_identity_header

pytestmark = pytest.mark.slow

SITE_FILE = Path(__file__).resolve().parents[2] / "config" / "nginx-auth-request.conf"


def render_site(gateway_port: int, app_port: int, listen_port: int) -> str:
    """The shipped site file with its three EDIT lines pointing at this test's sockets."""
    text = SITE_FILE.read_text(encoding="utf-8")
    for line, replacement in [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{gateway_port};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{app_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
    ]:
        assert text.count(line) == 1, f"{SITE_FILE.name}: expected one {line!r} (an EDIT line)"
        text = text.replace(line, replacement)
    return text


@dataclass
class Site:
    nginx: Nginx
    gateway: GatewayProcess
    app: RawUpstream
    wechat: WeChat

    @property
    def url(self) -> str:
        return self.nginx.url

    def get(
        self,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        method: str = "GET",
        body: bytes = b"",
    ) -> Reply:
        sent = [("Accept", HTML_ACCEPT), *(headers or [])]
        return send(self.nginx.port, path, sent, method=method, body=body)

    def session(self, user: str) -> tuple[str, str]:
        return ("Cookie", f"{COOKIE}={self.wechat.cookie(user)}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat) -> Iterator[Site]:
    app = RawUpstream()
    tmp = tmp_path_factory.mktemp("nginx")
    nginx_port, gateway_port = free_port(), free_port()
    try:
        with (
            start_gateway(
                tmp,
                wechat_app,
                app.url,
                gateway_port,
                public_url=f"http://127.0.0.1:{nginx_port}",
                upstreams=[
                    {"prefix": "/", "url": app.url},
                    {"prefix": "/", "url": app.url, "host": "open.test", "public": True},
                ],
                access={
                    "allow": [wechat_app.openid("alice"), wechat_app.unionid("zhangsan")],
                    "public": ["/static/"],
                    "trusted_proxies": ["127.0.0.1/32"],
                },
            ) as gateway,
            Nginx(tmp, render_site(gateway_port, app.port, nginx_port), nginx_port) as nginx,
        ):
            yield Site(nginx, gateway, app, wechat_app)
            assert "Traceback" not in gateway.log()
    finally:
        app.close()


def wechat_headers(seen: Seen) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in seen.headers:
        if is_identity_header(name):
            found.setdefault(name.lower(), []).append(value)
    return found


def alice_headers(wechat: WeChat) -> dict[str, list[str]]:
    """What the app gets for a minted alice session (``session_cookie``'s profile)."""
    return {
        "x-wechat-openid": [wechat.openid("alice")],
        "x-wechat-appid": [wechat.app.app_id],
        "x-wechat-unionid": [wechat.unionid("alice")],
        "x-wechat-nickname": ["Tester"],
        "x-wechat-avatar": ["https://thirdwx.qlogo.cn/mmopen/vi_32/test/132"],
        "x-wechat-provider": ["wechat"],
    }


# --- the whole login, through nginx ---------------------------------------------------------


def test_a_full_login_through_nginx(site: Site) -> None:
    wechat = site.wechat
    browser = RawBrowser()
    target = site.url + "/page?x=1&y=%2F"
    before = len(site.app.seen)

    # No session: nginx's check gets 401, error_page hands the request to the gateway's
    # login, which sends the browser to WeChat.
    challenge = browser.get(target)
    assert challenge.status == 302, (challenge.status, challenge.text[:300], site.nginx.log())
    authorize = challenge.location.split("#", 1)[0]
    assert authorize.startswith(wechat.server.url + "/connect/qrconnect?")
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{site.nginx.port}%2F_gateway%2Fcallback" in (
        authorize
    )
    assert len(site.app.seen) == before

    # WeChat sends the browser back to the callback, through nginx.
    confirmed = send_url(authorize + "&sim_user=alice")
    callback_url = confirmed.location
    assert callback_url.startswith(site.url + "/_gateway/callback?")
    callback = browser.get(callback_url)
    assert callback.status == 302, (callback.status, callback.text[:300])
    assert callback.location == target
    assert browser.value_of(COOKIE)

    # Back where it started, signed in: nginx passes the identity from the check.
    page = browser.get(target, [("Cookie", "theme=dark")])
    seen = page.echo()
    assert seen.target == "/page?x=1&y=%2F"
    alice = next(user for user in wechat.simulator.users if user.key == "alice")
    assert wechat_headers(seen) == {
        "x-wechat-openid": [wechat.openid("alice")],
        "x-wechat-appid": [wechat.app.app_id],
        "x-wechat-unionid": [wechat.unionid("alice")],
        "x-wechat-nickname": ["Alice"],
        "x-wechat-avatar": [alice.avatar],
        "x-wechat-provider": ["wechat"],
    }
    # The app keeps its own cookies and never sees the gateway's session.
    assert COOKIE not in (seen.value("Cookie") or "")
    assert "theme=dark" in (seen.value("Cookie") or "")
    assert len(site.app.seen) == before + 1

    # userinfo and sign-out, through nginx too.
    info = browser.get(site.url + "/_gateway/userinfo").json()
    assert info["openid"] == wechat.openid("alice")
    signed_out = browser.get(site.url + "/_gateway/logout")
    assert signed_out.status == 200
    assert browser.value_of(COOKIE) is None
    assert browser.get(target).status == 302


def test_spoofed_identity_headers_do_not_reach_the_app(site: Site) -> None:
    expected = alice_headers(site.wechat)
    for name, value in [*SPOOFS, ("all", "")]:
        spoof = SPOOFS if name == "all" else [(name, value)]
        seen = site.get("/page", [site.session("alice"), *spoof]).echo()
        found = wechat_headers(seen)
        # The documented limit: nginx overwrites the names it sets, drops every name with
        # "_", and passes other X-WeChat-* names; the app trusts only the gateway's names.
        found.pop("x-wechat-anything-else", None)
        assertion = seen.values("X-WeChat-Assertion")
        assert len(assertion) == 1, (name, assertion)
        assert jwt.get_unverified_header(assertion[0])["alg"] == "ES256"
        assert found == expected, (name, found)


def test_no_session_spoofing_gets_nothing_through(site: Site) -> None:
    before = len(site.app.seen)
    for name, value in SPOOFS:
        reply = site.get("/private", [(name, value)])
        assert reply.status == 302
    assert len(site.app.seen) == before


def test_public_paths_need_no_login_and_carry_no_client_identity(site: Site) -> None:
    seen = site.get("/static/app.js", SPOOFS).echo()
    assert seen.target == "/static/app.js"
    found = wechat_headers(seen)
    found.pop("x-wechat-anything-else", None)
    assert found == {}
    # With a session, the identity comes along on a public path too.
    seen = site.get("/static/app.js", [site.session("alice")]).echo()
    assert wechat_headers(seen) == alice_headers(site.wechat)


def test_not_allowed_shows_the_gateways_403_and_another_account_signs_in(site: Site) -> None:
    before = len(site.app.seen)
    browser = RawBrowser()
    browser.set(COOKIE, site.wechat.cookie("bob"), "127.0.0.1")
    refused = browser.get(site.url + "/page")
    assert refused.status == 403
    assert site.wechat.openid("bob") in refused.text
    assert browser.value_of(COOKIE) is None  # the refused session is cleared
    assert len(site.app.seen) == before
    callback = site.wechat.sign_in(
        browser, links(refused.text)["Sign in with another account"], "zhangsan"
    )
    assert callback.status == 302
    seen = browser.get(callback.location).echo()
    assert seen.values("X-WeChat-UnionID") == [site.wechat.unionid("zhangsan")]


def test_requests_with_bodies_pass_the_check(site: Site) -> None:
    for method in ("POST", "PUT", "DELETE"):
        reply = site.get("/items", [site.session("alice")], method=method, body=b'{"a": 1}')
        seen = reply.echo()
        assert seen.method == method
        assert seen.body == b'{"a": 1}'
        assert seen.values("X-WeChat-OpenID") == [site.wechat.openid("alice")]


@pytest.mark.parametrize(
    "path",
    ["/static/../admin", "/static/%2e%2e/admin", "/static/..%2Fadmin", "/static/..;/admin"],
)
def test_ambiguous_paths_are_refused(site: Site, path: str) -> None:
    before = len(site.app.seen)
    reply = site.get(path)
    # nginx turns a check that answers neither 2xx, 401 nor 403 (here: the gateway's 400)
    # into a 500; some spellings nginx refuses itself, or resolves to a path needing login.
    assert reply.status in (302, 400, 500), reply.status
    assert len(site.app.seen) == before


def test_the_check_is_not_reachable_from_outside(site: Site) -> None:
    reply = site.get("/_gateway/auth", [site.session("alice")])
    assert reply.status == 404


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Host", "open.test")],
        [("X-Original-URI", "/static/x")],
        [("X-Forwarded-Uri", "/static/x")],
        [
            ("X-Original-Method", "OPTIONS"),
            ("Origin", "x"),
            ("Access-Control-Request-Method", "GET"),
        ],
    ],
    ids=["forwarded-host", "original-uri", "forwarded-uri", "original-method"],
)
def test_clients_cannot_speak_for_nginx(site: Site, headers: list[tuple[str, str]]) -> None:
    """The gateway trusts nginx's headers; nginx must not pass a client's copies on."""
    before = len(site.app.seen)
    assert site.get("/private", headers).status == 302
    assert len(site.app.seen) == before


def test_the_clients_host_does_not_pick_the_rules(site: Site) -> None:
    """nginx sends every host of this server to its one app: the check must not be made
    for the host the client names (open.test is a public upstream in the gateway)."""
    before = len(site.app.seen)
    reply = send(site.nginx.port, "/private", [("Accept", HTML_ACCEPT)], host="open.test")
    assert reply.status == 302
    assert len(site.app.seen) == before
