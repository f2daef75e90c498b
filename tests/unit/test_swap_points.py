"""The swap points and the pipeline's parts, in process: the versioned session payload, the
``SessionStore`` and ``IdentityProvider`` implementations behind their protocols, the request
context, the access decision's verdicts, and the builder's wiring.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.auth.access import AccessPolicy
from gateway.auth.cookies import CookieSpec
from gateway.auth.decision import AccessDecision, Verdict
from gateway.auth.session import SESSION_PURPOSE, CookieSessionStore, Session, SessionCodec
from gateway.auth.store import SessionStore
from gateway.builder import build_gateway, wechat_providers
from gateway.config import (
    AccessSettings,
    OfficialAccountSettings,
    SessionSettings,
    Settings,
    UpstreamSettings,
    WeChatSettings,
)
from gateway.context import RequestContext
from gateway.providers.base import IdentityProvider
from gateway.proxy.router import Route, Router

SECRET = "swap-points-secret-0123456789abcdef"
NOW = 1_700_000_000
V1_FIELDS = ["oOpenID", "wxapp", None, "nick", "", NOW, None, None]


def _codec() -> SessionCodec:
    return SessionCodec(SECRET, clock=lambda: NOW)


def _session(**changes: Any) -> Session:
    fields: dict[str, Any] = {
        "openid": "oOpenID",
        "app_id": "wxapp",
        "unionid": None,
        "nickname": "nick",
        "avatar": "",
        "issued_at": NOW,
        "expires_at": NOW + 3600,
    }
    return Session(**{**fields, **changes})


def _environ(cookie: str = "", method: str = "GET", **headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": "/", "REMOTE_ADDR": "1.2.3.4"}
    if cookie:
        environ["HTTP_COOKIE"] = f"wg={cookie}"
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    return environ


# --- the versioned session payload ----------------------------------------------------------


def test_a_session_records_its_provider_and_payload_version() -> None:
    codec = _codec()
    token = codec.encode(_session(provider="wechat", sid="s1d"))
    payload = codec.unseal(token, purpose=SESSION_PURPOSE)
    assert payload is not None
    assert json.loads(payload)[:4] == [2, "wechat", "s1d", "oOpenID"]
    decoded = codec.decode(token)
    assert decoded is not None
    assert (decoded.provider, decoded.sid) == ("wechat", "s1d")


def test_a_version_1_cookie_is_still_read_as_a_wechat_session() -> None:
    codec = _codec()
    token = codec.seal(json.dumps(V1_FIELDS).encode(), purpose=SESSION_PURPOSE, ttl=3600)
    session = codec.decode(token)
    assert session == _session(expires_at=NOW + 3600, provider="wechat", sid="")


@pytest.mark.parametrize(
    "fields",
    [
        [3, "wechat", "sid", *V1_FIELDS],  # a version this release does not know
        [2, 7, "sid", *V1_FIELDS],  # a provider that is not a name
        [2, "wechat", None, *V1_FIELDS],  # an id that is not a string
        [2, "wechat", *V1_FIELDS],  # no id
        [2],
        [2, "wechat", "sid", *V1_FIELDS[:-1]],
        [True, "wechat", "sid", *V1_FIELDS],
        {"version": 2},
    ],
)
def test_any_other_payload_is_no_session(fields: object) -> None:
    codec = _codec()
    token = codec.seal(json.dumps(fields).encode(), purpose=SESSION_PURPOSE, ttl=3600)
    assert codec.decode(token) is None


# --- the cookie store behind SessionStore ---------------------------------------------------


def _store() -> CookieSessionStore:
    return CookieSessionStore(_codec(), CookieSpec("wg"), clock=lambda: NOW)


def test_the_cookie_store_is_a_session_store() -> None:
    store: SessionStore = _store()
    session = _session()
    name, value = store.save(_environ(), session)
    assert name == "Set-Cookie"
    cookie = value.split(";", 1)[0].split("=", 1)[1]
    assert store.load(_environ(cookie)) == (session, False)
    assert "Max-Age=0" in store.clear(_environ(cookie))[1]


def test_forget_drops_what_a_worker_remembers_of_opened_sessions() -> None:
    store = _store()
    alice, bob = _session(openid="oAlice"), _session(openid="oBob")
    cookies = {}
    for session in (alice, bob):
        value = store.save(_environ(), session)[1]
        cookies[session.openid] = value.split(";", 1)[0].split("=", 1)[1]
        store.load(_environ(cookies[session.openid]))
    remembered = store._opened
    assert len(remembered) == 2
    store.forget(lambda session: session.openid == "oAlice")
    assert [session.openid for session, _ in remembered.values()] == ["oBob"]
    store.forget()
    assert not remembered
    # Forgetting is not revoking: the cookie is read again, from scratch.
    assert store.load(_environ(cookies["oAlice"])) == (alice, False)


# --- the request context --------------------------------------------------------------------


def test_the_context_judges_api_calls_only_when_asked_and_keeps_what_it_learns() -> None:
    ctx = RequestContext(_environ(accept="application/json"), "GET", "/x", False)
    assert ctx.api
    ctx.api = False
    assert not ctx.api
    browser = RequestContext(_environ(accept="text/html"), "GET", "/x", False)
    assert not browser.api
    assert RequestContext(_environ(method="POST"), "POST", "/x", False).api


def test_forwarded_claims_count_only_from_a_trusted_proxy() -> None:
    environ = _environ(
        host="gw.example",
        x_forwarded_host="app.example",
        x_original_uri="/wiki",
        x_original_method="post",
    )
    untrusted = RequestContext(environ, "GET", "/_gateway/auth", False)
    assert untrusted.forwarded_host() == "gw.example"
    assert untrusted.original_uri() is None
    assert untrusted.original_method() == "GET"
    trusted = RequestContext(environ, "GET", "/_gateway/auth", True)
    assert trusted.forwarded_host() == "app.example"
    assert trusted.original_uri() == "/wiki"
    assert trusted.original_method() == "POST"
    assert trusted.reserved and not RequestContext(environ, "GET", "/_gatewayx", True).reserved


# --- the access decision --------------------------------------------------------------------


def _decision(**access: Any) -> tuple[AccessDecision, CookieSessionStore]:
    store = _store()
    routes = Router(
        [
            Route(UpstreamSettings(prefix="/", url="http://127.0.0.1:9")),
            Route(UpstreamSettings(prefix="/pub/", url="http://127.0.0.1:9", public=True)),
            Route(UpstreamSettings(prefix="/ops/", url="http://127.0.0.1:9", allow=("oOps",))),
        ]
    )
    policy = AccessPolicy(AccessSettings(**access))
    return AccessDecision(policy, routes, store, clock=lambda: NOW), store


def _verdict(path: str, cookie: str = "", method: str = "GET", **access: Any) -> Verdict:
    decision, _ = _decision(**access)
    route = decision.route(path, None)
    ctx = RequestContext(_environ(cookie, method), method, path, False)
    return decision.decide(ctx, route, method, path).verdict


def _cookie(openid: str) -> str:
    value = _store().save(_environ(), _session(openid=openid))[1]
    return value.split(";", 1)[0].split("=", 1)[1]


@pytest.mark.parametrize(
    ("path", "user", "expected"),
    [
        ("/app", None, Verdict.CHALLENGE),
        ("/app", "oAnyone", Verdict.IDENTITY),
        ("/pub/page", None, Verdict.ANONYMOUS),
        ("/ops/x", "oAnyone", Verdict.FORBIDDEN),
        ("/ops/x", "oOps", Verdict.IDENTITY),
        ("/ops/x", None, Verdict.CHALLENGE),
    ],
)
def test_verdicts(path: str, user: str | None, expected: Verdict) -> None:
    assert _verdict(path, _cookie(user) if user else "") is expected


def test_the_decision_knows_api_paths_and_may_enter() -> None:
    decision, _ = _decision(api_paths=("/api/",), allow=("oAlice",))
    ctx = RequestContext(_environ(accept="text/html"), "GET", "/api/x", False)
    assert decision.decide(ctx, decision.route("/api/x", None), "GET", "/api/x").verdict is (
        Verdict.CHALLENGE
    )
    assert ctx.api
    assert decision.may_enter(_session(openid="oAlice"), "/anything")
    assert not decision.may_enter(_session(openid="oBob"), "/anything")


# --- providers and the builder --------------------------------------------------------------


def _settings(official_account: bool) -> Settings:
    oa = (
        OfficialAccountSettings(app_id="wxoa", app_secret="oa-secret") if official_account else None
    )
    return Settings(
        public_url="https://gw.example",
        wechat=WeChatSettings(app_id="wxweb", app_secret="web-secret", official_account=oa),
        session=SessionSettings(secret=SECRET),
        upstreams=(UpstreamSettings(prefix="/", url="http://127.0.0.1:9"),),
    )


def test_in_app_flows_come_first_and_serve_only_their_browser() -> None:
    providers: list[IdentityProvider] = wechat_providers(_settings(official_account=True))
    assert [(p.key, p.app_id, p.name) for p in providers] == [
        ("oa", "wxoa", "wechat"),
        ("qr", "wxweb", "wechat"),
    ]
    oa, qr = providers
    in_wechat = _environ(user_agent="Mozilla/5.0 MicroMessenger/8.0.50")
    assert oa.serves(in_wechat) and not oa.serves(_environ(user_agent="Chrome"))
    assert qr.serves(in_wechat) and qr.serves(_environ())
    assert "/connect/oauth2/authorize?" in oa.authorize_url("https://gw.example/cb", "S1")
    assert "/connect/qrconnect?" in qr.authorize_url("https://gw.example/cb", "S1")
    # Only the QR flow can be embedded in the gateway's own page.
    assert oa.embedded_login("https://gw.example/cb", "S1") is None
    embedded = qr.embedded_login("https://gw.example/cb", "S1")
    assert embedded is not None
    assert (embedded.app_id, embedded.state) == ("wxweb", "S1")
    for provider in providers:
        provider.close()


def test_the_builder_wires_one_gateway() -> None:
    gateway = build_gateway(_settings(official_account=False))
    try:
        assert list(gateway.login.providers) == ["qr"]
        assert gateway.forward.context.gateway_cookies == frozenset(
            {"wechat_gateway", "wechat_gateway_login"}
        )
        assert gateway.endpoints.login is gateway.login
        assert gateway.access is gateway.endpoints.access
    finally:
        gateway.close()
