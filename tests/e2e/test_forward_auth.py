"""``/_gateway/auth``, the forward-auth check for nginx ``auth_request`` and Traefik
``forwardAuth``, against the real ``wechat-gateway serve``.

Two gateways with the same rules run for the module: ``trusting`` believes
``X-Original-URI`` / ``X-Forwarded-Uri`` / ``X-Original-Method`` / ``X-Forwarded-Method`` /
``X-Forwarded-Host`` from loopback (``access.trusted_proxies: [127.0.0.1/32]``);
``untrusting`` has no trusted proxies and must decide as if the check were for ``/``.
Requests are written on raw sockets, as a front proxy would send them. nginx itself is
driven in ``test_nginx``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.helpers.raw_e2e import (
    IDENTITY_HEADERS,
    RawBrowser,
    Reply,
    WeChat,
    rd_of,
    send,
    start_gateway,
)
from tests.helpers.support import (
    COOKIE,
    HTML_ACCEPT,
    GatewayProcess,
    free_port,
    links,
    session_cookie,
)
from tests.helpers.upstreams import RawUpstream, is_identity_header

AUTH = "/_gateway/auth"


@dataclass
class Pair:
    trusting: GatewayProcess
    untrusting: GatewayProcess
    wechat: WeChat
    upstream: RawUpstream

    def gateway(self, trusted: bool) -> GatewayProcess:
        return self.trusting if trusted else self.untrusting

    def check(
        self,
        trusted: bool,
        headers: list[tuple[str, str]],
        user: str | None = None,
        *,
        method: str = "GET",
        accept: str = HTML_ACCEPT,
    ) -> Reply:
        sent = [("Accept", accept), *headers]
        if user is not None:
            sent.append(("Cookie", f"{COOKIE}={self.wechat.cookie(user)}"))
        return send(self.gateway(trusted).port, AUTH, sent, method=method)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat) -> Iterator[Pair]:
    upstream = RawUpstream()
    tmp: Path = tmp_path_factory.mktemp("forward-auth")

    def config(trusted: bool) -> dict[str, object]:
        return {
            "upstreams": [
                {"prefix": "/", "url": upstream.url},
                {"prefix": "/b", "url": upstream.url, "allow": [wechat_app.openid("bob")]},
                {"prefix": "/", "url": upstream.url, "host": "app.example.test"},
            ],
            "redirect_domains": ["app.example.test"],
            "access": {
                "allow": [wechat_app.openid("alice"), wechat_app.unionid("zhangsan")],
                "public": ["/static/", "POST /hooks/"],
                "api_paths": ["/api/"],
                "trusted_proxies": ["127.0.0.1/32"] if trusted else [],
            },
        }

    try:
        with (
            start_gateway(tmp, wechat_app, upstream.url, **config(True)) as trusting,
            start_gateway(
                tmp, wechat_app, upstream.url, free_port(), **config(False)
            ) as untrusting,
        ):
            yield Pair(trusting, untrusting, wechat_app, upstream)
    finally:
        upstream.close()
    assert upstream.seen == []  # forward-auth never proxies anything


def identity(reply: Reply) -> dict[str, str]:
    return {name: value for name, value in reply.headers if is_identity_header(name)}


# --- the three answers -------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_allowed_session_gets_2xx_with_identity_headers(pair: Pair, trusted: bool) -> None:
    wechat = pair.wechat
    reply = pair.check(trusted, [("X-Original-URI", "/page?x=1")], "alice")
    assert reply.status == 200
    assert reply.body == b""
    assert identity(reply) == {
        "X-WeChat-OpenID": wechat.openid("alice"),
        "X-WeChat-AppID": wechat.app.app_id,
        "X-WeChat-UnionID": wechat.unionid("alice"),
        "X-WeChat-Nickname": "Tester",
        "X-WeChat-Avatar": "https://thirdwx.qlogo.cn/mmopen/vi_32/test/132",
        "X-WeChat-Provider": "wechat",
    }
    assert reply.values("Set-Cookie") == []
    head = pair.check(trusted, [], "alice", method="HEAD")
    assert head.status == 200
    assert identity(head) == identity(reply)


def test_identity_headers_are_encoded_and_unionid_only_when_known(pair: Pair) -> None:
    cookie = session_cookie(
        pair.wechat.openid("alice"),
        unionid=None,
        nickname="张三\r\nX-Evil: 1",
        app_id=pair.wechat.app.app_id,
    )
    reply = send(pair.trusting.port, AUTH, [("Cookie", f"{COOKIE}={cookie}")])
    assert reply.status == 200
    assert "X-WeChat-UnionID" not in identity(reply)
    assert identity(reply)["X-WeChat-Nickname"] == "%E5%BC%A0%E4%B8%89X-Evil%3A%201"
    assert reply.value("X-Evil") is None


def test_spoofed_identity_headers_on_the_check_change_nothing(pair: Pair) -> None:
    spoofs = [(name, "spoof") for name in IDENTITY_HEADERS] + [("X_WeChat_OpenID", "spoof")]
    reply = pair.check(True, spoofs, "alice")
    assert reply.status == 200
    assert identity(reply)["X-WeChat-OpenID"] == pair.wechat.openid("alice")
    assert "spoof" not in str(reply.headers)
    reply = pair.check(True, [*spoofs, ("X-Original-URI", "/page")])
    assert reply.status == 401
    assert identity(reply) == {}


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_no_session_is_401_with_a_sign_in_link(pair: Pair, trusted: bool) -> None:
    page = pair.check(trusted, [("X-Original-URI", "/page?x=1&y=%2F")])
    assert page.status == 401
    assert page.value("WWW-Authenticate")
    assert (page.value("Content-Type") or "").startswith("text/html")
    assert identity(page) == {}
    sign_in = links(page.text)["Sign in"]
    assert urlsplit(sign_in).path == "/_gateway/login"
    # Only a trusted proxy's word says where the browser was going.
    assert rd_of(sign_in) == ("/page?x=1&y=%2F" if trusted else "/")
    api = pair.check(trusted, [("X-Original-URI", "/page")], accept="application/json")
    assert api.status == 401
    assert rd_of(api.json()["login_url"]) == ("/page" if trusted else "/")


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_not_allowed_is_403_and_keeps_a_session_good_elsewhere(pair: Pair, trusted: bool) -> None:
    """bob is refused by the global list but allowed on /b: his session stays."""
    reply = pair.check(trusted, [("X-Original-URI", "/page")], "bob")
    assert reply.status == 403
    assert pair.wechat.openid("bob") in reply.text
    assert identity(reply) == {}
    assert reply.set_cookie(COOKIE) is None
    api = pair.check(trusted, [("X-Original-URI", "/page")], "bob", accept="application/json")
    assert api.status == 403
    assert pair.wechat.openid("bob") in api.json()["detail"]


# --- whose word counts --------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Original-URI", "X-Forwarded-Uri"])
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_public_paths_by_the_original_uri_only_from_a_trusted_proxy(
    pair: Pair, header: str, trusted: bool
) -> None:
    reply = pair.check(trusted, [(header, "/static/app.js?v=3")])
    assert reply.status == (200 if trusted else 401)
    assert identity(reply) == {}
    # With a session the identity comes along on a public path.
    reply = pair.check(trusted, [(header, "/static/app.js")], "alice")
    assert reply.status == 200
    assert identity(reply)["X-WeChat-OpenID"] == pair.wechat.openid("alice")
    # A refused user on a public path: public, and anonymous.
    reply = pair.check(trusted, [(header, "/static/app.js")], "bob")
    assert reply.status == (200 if trusted else 403)
    assert identity(reply) == {}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("X-Original-URI", "/hooks/github"), ("X-Original-Method", "POST")], 200),
        ([("X-Original-URI", "/hooks/github"), ("X-Original-Method", "post")], 200),
        ([("X-Forwarded-Uri", "/hooks/github"), ("X-Forwarded-Method", "POST")], 200),
        ([("X-Original-URI", "/hooks/github"), ("X-Original-Method", "GET")], 401),
        ([("X-Original-URI", "/hooks/github")], 401),
        ([("X-Forwarded-Uri", "/hooks/github"), ("X-Forwarded-Method", "PUT")], 401),
    ],
)
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_original_method(
    pair: Pair, headers: list[tuple[str, str]], status: int, trusted: bool
) -> None:
    reply = pair.check(trusted, headers, accept="application/json")
    assert reply.status == (status if trusted else 401)


@pytest.mark.parametrize(
    ("user", "uri", "trusted_status"),
    [
        ("alice", "/b/page", 403),  # /b has its own list: bob only
        ("bob", "/b/page", 200),
        ("bob", "/b", 200),
        ("bob", "/bee", 403),
        ("alice", "/page", 200),
    ],
)
def test_upstream_rules_follow_the_original_uri(
    pair: Pair, user: str, uri: str, trusted_status: int
) -> None:
    assert pair.check(True, [("X-Original-URI", uri)], user).status == trusted_status
    # Untrusted, the check is for "/": the global list.
    expected = 200 if user == "alice" else 403
    assert pair.check(False, [("X-Original-URI", uri)], user).status == expected


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_forwarded_host_picks_the_return_address(pair: Pair, trusted: bool) -> None:
    reply = pair.check(
        trusted,
        [("X-Forwarded-Host", "app.example.test"), ("X-Forwarded-Uri", "/inbox?id=7")],
        accept="application/json",
    )
    assert reply.status == 401
    expected = "http://app.example.test/inbox?id=7" if trusted else "/"
    assert rd_of(reply.json()["login_url"]) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/%2E%2E%2Fadmin",
        "/static/..;/admin",
        "/static/..%5Cadmin",
        "/static/%252e%252e/admin",
        "/static/%c0%ae%c0%ae/admin",
        "/static/%00",
    ],
)
def test_ambiguous_original_uris_never_pass_as_public(pair: Pair, uri: str) -> None:
    reply = pair.check(True, [("X-Original-URI", uri)])
    assert reply.status == 400
    # A signed-in, allowed user is not bothered by the spelling.
    assert pair.check(True, [("X-Original-URI", uri)], "alice").status == 200


@pytest.mark.parametrize("uri", ["//admin", "/STATIC/x", "/admin;/static/", "/_gateway/login"])
def test_other_spellings_need_a_session(pair: Pair, uri: str) -> None:
    assert pair.check(True, [("X-Original-URI", uri)]).status == 401


def test_the_check_accepts_get_and_head_only(pair: Pair) -> None:
    reply = send(pair.trusting.port, AUTH, [("Accept", "application/json")], method="POST")
    assert reply.status == 405
    assert reply.value("Allow") == "GET, HEAD"


# --- the login endpoint behind a proxy -----------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Original-URI", "X-Forwarded-Uri"])
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_login_without_rd_returns_to_the_original_uri_of_a_trusted_proxy(
    pair: Pair, header: str, trusted: bool
) -> None:
    """nginx's ``error_page 401 = /_gateway/login`` sends no ``rd``, only the header."""
    gateway = pair.gateway(trusted)
    callback = pair.wechat.sign_in(
        RawBrowser(), gateway.url + "/_gateway/login", "alice", [(header, "/page?x=1")]
    )
    assert callback.location == gateway.url + ("/page?x=1" if trusted else "/")
    # An explicit rd wins over the header.
    callback = pair.wechat.sign_in(
        RawBrowser(),
        gateway.url + "/_gateway/login?rd=" + quote("/other?y=2", safe=""),
        "alice",
        [(header, "/page")],
    )
    assert callback.location == gateway.url + "/other?y=2"


def test_login_behind_a_proxy_returns_to_the_original_host(pair: Pair) -> None:
    callback = pair.wechat.sign_in(
        RawBrowser(),
        pair.trusting.url + "/_gateway/login",
        "alice",
        [("X-Forwarded-Host", "app.example.test"), ("X-Original-URI", "/inbox")],
    )
    assert callback.location == "http://app.example.test/inbox"


# --- which 401s are API answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Uri", "/items"), ("X-Forwarded-Method", "POST")],
        [("X-Original-URI", "/api/items"), ("X-Original-Method", "GET")],
    ],
    ids=["original-post", "api-path"],
)
def test_forward_auth_401_for_api_calls_is_json(pair: Pair, headers: list[tuple[str, str]]) -> None:
    reply = pair.check(True, headers, accept=HTML_ACCEPT)
    assert reply.status == 401
    assert "login_url" in reply.json()
