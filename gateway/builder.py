"""The one place the gateway's parts are built from settings and wired together.

Everything that varies by configuration is decided here: which identity providers exist
(WeChat's website app and Official Account, WeCom's web login and in-app authorization,
as configured; in-app flows first),
the session store, the access policy and routes, the login flow and the forwarder. The
pipeline (``gateway.app.Gateway``) only receives them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.app import Gateway
from gateway.audit import Audit
from gateway.auth.access import AccessPolicy, TrustedProxies
from gateway.auth.cookies import CookieSpec
from gateway.auth.decision import AccessDecision
from gateway.auth.redirects import RedirectPolicy
from gateway.auth.revocable import RevocableSessionStore
from gateway.auth.session import CookieSessionStore, SessionCodec
from gateway.endpoints import Endpoints
from gateway.identity.assertion import AssertionSigner
from gateway.identity.compose import Identity
from gateway.identity.keys import FileKeys, StoredKeys
from gateway.login.flow import LoginFlow
from gateway.login.ledger import CallbackLedger
from gateway.login.ratelimit import RateLimiter, parse_rate
from gateway.login.revalidation import Revalidator
from gateway.login.state import LoginStateCookie
from gateway.providers.wechat.client import WeChatClient
from gateway.providers.wechat.provider import WeChatProvider
from gateway.providers.wecom.client import WeComClient
from gateway.providers.wecom.provider import DepartmentTree, WeComProvider
from gateway.providers.wecom.tokens import AccessTokens
from gateway.proxy.forward import Forwarder
from gateway.proxy.request import ForwardContext
from gateway.proxy.router import Route, Router
from gateway.proxy.tunnel import Tunnels, WebSocketProxy
from gateway.server.metrics import Metrics
from gateway.state import open_store
from gateway.state.watch import RevocationWatcher
from gateway.web.pages import Branding

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.config import Settings
    from gateway.providers.base import IdentityProvider
    from gateway.state.base import StateStore


def build_gateway(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    """A gateway for one worker process (built after the fork), from validated settings."""
    metrics = metrics if metrics is not None else Metrics()
    session = settings.session
    codec = SessionCodec(session.secret, session.previous_secrets, clock=clock)
    state = open_store(settings.state, session_max_age=session.max_age, clock=clock)
    providers = identity_providers(settings, state, codec, clock=clock)
    watcher = RevocationWatcher(state, max_staleness=settings.state.max_staleness, wall_clock=clock)
    sessions = RevocableSessionStore(
        CookieSessionStore(
            codec,
            CookieSpec(session.cookie_name, secure=session.secure, domain=session.cookie_domain),
            clock=clock,
            app_ids=frozenset(provider.app_id for provider in providers),
        ),
        state,
        watcher,
        clock=clock,
    )
    # The name keeps the session cookie's prefix; under ``__Host-`` the spec widens the
    # path to ``/`` (the proxy strips this cookie from what the upstream sees).
    login_state = LoginStateCookie(
        codec,
        CookieSpec(f"{session.cookie_name}_login", path="/_gateway/", secure=session.secure),
        [provider.key for provider in providers],
        clock=clock,
    )
    revalidator = (
        Revalidator(session.revalidate, providers, timeout=settings.provider_timeout, clock=clock)
        if session.revalidate is not None
        else None
    )
    policy = AccessPolicy(settings.access)
    router = Router(Route(upstream, policy.groups) for upstream in settings.upstreams)
    access = AccessDecision(policy, router, sessions, revalidator, clock=clock)
    keys: FileKeys | StoredKeys | None = None
    signer = None
    if settings.identity.assertion:
        keys = (
            FileKeys(settings.identity.signing_keys)
            if settings.identity.signing_keys
            else StoredKeys(
                state,
                codec,
                clock=clock,
                previous=[SessionCodec(old) for old in session.previous_secrets],
            )
        )
        signer = AssertionSigner(keys, issuer=settings.public_url, clock=clock)
    identity = Identity(policy.groups, signer, settings.public_url)
    branding = Branding.from_settings(settings)
    login = LoginFlow(
        public_url=settings.public_url,
        providers=providers,
        sessions=sessions,
        login_state=login_state,
        redirects=RedirectPolicy(settings.public_url, settings.redirect_domains),
        may_enter=access.may_enter,
        ledger=CallbackLedger(state, clock=clock),
        max_age=session.max_age,
        keep_refresh_token=session.revalidate is not None,
        state_ttl=settings.login.state_ttl,
        exchange_timeout=settings.provider_timeout,
        page_mode=settings.login.mode == "page",
        branding=branding,
        upstream_hosts=frozenset(u.host for u in settings.upstreams if u.host),
        audit=Audit(policy.trusted_proxies),
        clock=clock,
    )
    forward = Forwarder(
        ForwardContext(
            public_url=settings.public_url,
            public_scheme=settings.public_url.partition("://")[0],
            max_body_size=settings.server.max_body_size,
            gateway_cookies=frozenset({sessions.cookie.name, login_state.name}),
            client_body_timeout=settings.server.client_body_timeout,
        ),
        metrics,
    )
    tunnels = Tunnels(watcher, metrics, grace=settings.server.graceful_timeout, clock=clock)
    return Gateway(
        trusted_proxies=access.policy.trusted_proxies,
        access=access,
        login=login,
        forward=forward,
        websocket=WebSocketProxy(forward, tunnels, settings.public_url),
        identity=identity,
        endpoints=Endpoints(
            access,
            login,
            metrics,
            state,
            identity,
            keys,
            TrustedProxies(settings.server.metrics_allow),
            RateLimiter(state, *parse_rate(settings.login.rate_limit), clock=clock),
        ),
        metrics=metrics,
        branding=branding,
        public_url=settings.public_url,
    )


def identity_providers(
    settings: Settings,
    state: StateStore,
    codec: SessionCodec,
    *,
    clock: Callable[[], float] = time.time,
) -> list[IdentityProvider]:
    """Every flow of the configured providers, in order of preference: the in-app ones
    first, WeCom's before WeChat's (the WeCom client's User-Agent also says
    ``MicroMessenger``), then the web logins, which serve every browser."""
    wecom = wecom_providers(settings, state, codec, clock=clock)
    wechat = wechat_providers(settings)
    return [
        *(p for p in wecom if p.in_app),
        *(p for p in wechat if p.in_app),
        *(p for p in wecom if not p.in_app),
        *(p for p in wechat if not p.in_app),
    ]


def wecom_providers(
    settings: Settings,
    state: StateStore,
    codec: SessionCodec,
    *,
    clock: Callable[[], float] = time.time,
) -> list[IdentityProvider]:
    """WeCom's two flows over one client: in-app inside the WeCom client, the web login
    elsewhere. The app's access token is shared through the state store."""
    wecom = settings.wecom
    if wecom is None:
        return []
    client = WeComClient(
        wecom.corp_id,
        wecom.agent_id,
        wecom.secret,
        api_base=wecom.api_base,
        timeout=wecom.timeout,
        tokens=AccessTokens(state, codec, clock=clock),
        userinfo_api=wecom.userinfo_api,
    )
    tree = DepartmentTree(client)
    return [
        WeComProvider(
            client,
            tree,
            in_app=in_app,
            timeout=wecom.timeout,
            allow_external=wecom.allow_external,
            web_login=wecom.web_login,
            login_base=wecom.login_base,
            qrconnect_base=wecom.qrconnect_base,
            open_base=wecom.open_base,
        )
        for in_app in (True, False)
    ]


def wechat_providers(settings: Settings) -> list[IdentityProvider]:
    """WeChat's flows, in order of preference: the Official Account inside WeChat's own
    browser (when configured), then the website app's QR login for every browser."""
    wechat = settings.wechat
    if wechat is None:
        return []

    def client(app_id: str, app_secret: str, config_key: str = "wechat") -> WeChatClient:
        return WeChatClient(
            app_id,
            app_secret,
            api_base=wechat.api_base,
            open_base=wechat.open_base,
            timeout=wechat.timeout,
            lang=wechat.lang,
            config_key=config_key,
        )

    providers: list[IdentityProvider] = []
    oa = wechat.official_account
    if oa is not None:
        providers.append(
            WeChatProvider(
                client(oa.app_id, oa.app_secret, "wechat.official_account"),
                key="oa",
                timeout=wechat.timeout,
                fetch_profile=wechat.fetch_profile,
                lang=wechat.lang,
                scope=oa.scope,
            )
        )
    providers.append(
        WeChatProvider(
            client(wechat.app_id, wechat.app_secret),
            key="qr",
            timeout=wechat.timeout,
            fetch_profile=wechat.fetch_profile,
            lang=wechat.lang,
            wxlogin_js=settings.login.wxlogin_js,
        )
    )
    return providers
