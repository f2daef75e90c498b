"""The gateway's own endpoints under ``/_gateway/``: sign-in, forward-auth, user info,
health, readiness and metrics. None of them is ever proxied.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from gateway.auth.access import TrustedProxies
from gateway.auth.decision import Verdict
from gateway.errors import (
    LoginCancelled,
    LoginError,
    LoginStateInvalid,
    MethodNotAllowed,
    NotAllowed,
    NotFound,
    TooManyRequests,
)
from gateway.identity.headers import clean_text
from gateway.login.flow import CALLBACK_PATH, LOGIN_PATH, LOGOUT_PATH
from gateway.state.base import StoreUnavailable
from gateway.web.pages import json_response, respond

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse

    from gateway.auth.decision import AccessDecision
    from gateway.context import RequestContext
    from gateway.identity.compose import Identity
    from gateway.identity.keys import FileKeys, StoredKeys
    from gateway.login.flow import LoginFlow
    from gateway.login.ratelimit import RateLimiter
    from gateway.server.metrics import Metrics
    from gateway.state.base import StateStore

    Handler = Callable[[RequestContext, StartResponse], Iterable[bytes]]

USERINFO_PATH = "/_gateway/userinfo"
AUTH_PATH = "/_gateway/auth"
HEALTHZ_PATH = "/_gateway/healthz"
READYZ_PATH = "/_gateway/readyz"
METRICS_PATH = "/_gateway/metrics"
JWKS_PATH = "/_gateway/jwks.json"
#: The same document where JWT libraries look for it by convention; answered by the
#: gateway, never proxied.
WELL_KNOWN_JWKS_PATH = "/.well-known/jwks.json"
#: Verifiers may cache the key set this long; a new key is published a week before it signs.
_JWKS_MAX_AGE = 300


class Endpoints:
    """Dispatches a ``/_gateway/`` request to its endpoint, by path and method."""

    def __init__(
        self,
        access: AccessDecision,
        login: LoginFlow,
        metrics: Metrics,
        state: StateStore,
        identity: Identity,
        keys: FileKeys | StoredKeys | None,
        metrics_allow: TrustedProxies | None = None,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        self.rate_limit = rate_limit
        #: Who may read the metrics: the peer's own address, never a forwarded one.
        self.metrics_allow = metrics_allow or TrustedProxies(("127.0.0.0/8", "::1"))
        self.access = access
        self.login = login
        self.metrics = metrics
        self.state = state
        self.identity = identity
        self.keys = keys
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            LOGIN_PATH: (("GET", "HEAD"), self.login_start),
            CALLBACK_PATH: (("GET",), self.callback),
            LOGOUT_PATH: (("GET", "POST"), login.logout),
            USERINFO_PATH: (("GET", "HEAD"), self.userinfo),
            AUTH_PATH: (("GET", "HEAD"), self.forward_auth),
            HEALTHZ_PATH: (("GET", "HEAD"), self.healthz),
            READYZ_PATH: (("GET", "HEAD"), self.readyz),
            METRICS_PATH: (("GET", "HEAD"), self.metrics_text),
            JWKS_PATH: (("GET", "HEAD"), self.jwks),
            WELL_KNOWN_JWKS_PATH: (("GET", "HEAD"), self.jwks),
        }

    def __call__(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        self.metrics.inc("requests_total", "gateway_endpoint")
        route = self.routes.get(ctx.path)
        if route is None:
            raise NotFound("no such gateway endpoint")
        methods, handler = route
        if ctx.method not in methods:
            raise MethodNotAllowed(methods)
        return handler(ctx, start_response)

    def _limit(self, ctx: RequestContext, scope: str) -> None:
        """``login.rate_limit``: 429 with ``Retry-After`` beyond it, per client address."""
        limiter = self.rate_limit
        if limiter is None or not limiter.enabled:
            return
        address = self.access.policy.trusted_proxies.client(ctx.environ)
        retry_after = limiter.check(address, scope)
        if retry_after is not None:
            self.metrics.inc("requests_total", "rate_limited")
            raise TooManyRequests(retry_after)

    def login_start(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        self._limit(ctx, "login")
        return self.login.start(ctx, start_response)

    def callback(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        self._limit(ctx, "callback")
        started = perf_counter()
        try:
            response = self._callback(ctx, start_response)
        finally:
            self.metrics.observe("signin_duration_seconds", perf_counter() - started)
        return response

    def _callback(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.login.callback(ctx, start_response)
        except LoginCancelled:
            self.metrics.inc("logins_total", "cancelled")
            raise
        except LoginStateInvalid:
            self.metrics.inc("logins_total", "invalid_state")
            raise
        except NotAllowed:
            self.metrics.inc("logins_total", "denied")
            raise
        except LoginError:
            self.metrics.inc("logins_total", "wechat_error")
            raise
        self.metrics.inc("logins_total", "success")
        return response

    def forward_auth(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """``/_gateway/auth`` for nginx ``auth_request`` and Traefik ``forwardAuth``.

        2xx with the identity as response headers, 401 without a session, 403 when not
        allowed. The original URI, method and host are taken from the front proxy's headers
        only when it is a configured trusted proxy; ``Upgrade`` headers change nothing.
        """
        uri = ctx.original_uri() or "/"
        method = ctx.original_method()
        host = ctx.forwarded_host()
        path = uri.split("?", 1)[0]
        route = self.access.route(path, host)
        # What the original request was decides page or JSON, not this check's own GET.
        if method not in ("GET", "HEAD"):
            ctx.api = True
        decision = self.access.decide(ctx, route, method, path)
        extra = (decision.set_cookie,) if decision.set_cookie is not None else ()
        if decision.verdict is Verdict.CHALLENGE:
            self.metrics.inc("requests_total", "unauthorized")
            # nginx only reads the status; Traefik shows this page, with its sign-in link.
            raise self.login.sign_in_required(self.login.return_to(uri, host), extra)
        if decision.verdict is Verdict.FORBIDDEN:
            self.metrics.inc("requests_total", "forbidden")
            self.login.audit(
                "denied", ctx.environ, session=decision.session, reason="not_allowed", path=path
            )
            raise self.login.forbidden(decision)
        headers = self.identity.headers(decision.session) if decision.session is not None else ()
        return respond(
            start_response,
            "200 OK",
            b"",
            "text/plain; charset=utf-8",
            [*headers, *extra],
            head_only=True,
        )

    def userinfo(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/userinfo``: the session's identity as JSON, or the 401."""
        session, set_cookie = self.access.session(ctx.environ)
        extra = (set_cookie,) if set_cookie is not None else ()
        if session is None:
            ctx.api = True
            raise self.login.sign_in_required(extra_headers=extra)
        payload: dict[str, object] = {
            "openid": session.openid or None,
            "unionid": session.unionid,
            "app_id": session.app_id if session.provider == "wechat" else None,
            "nickname": clean_text(session.nickname),
            "avatar": session.avatar,
            "provider": session.provider,
        }
        if session.provider == "wecom":
            payload["userid"] = session.userid
            payload["corp_id"] = session.corp_id
            payload["departments"] = list(session.departments)
        return json_response(ctx.environ, start_response, "200 OK", payload, extra)

    def jwks(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """The public keys of every key that signed an assertion still valid (RFC 7517):
        public, no session, cacheable for a few minutes. Without assertions, no keys."""
        document = self.keys.jwks() if self.keys is not None else b'{"keys":[]}'
        return respond(
            start_response,
            "200 OK",
            document,
            "application/jwk-set+json",
            head_only=ctx.method == "HEAD",
            cache_control=f"public, max-age={_JWKS_MAX_AGE}",
        )

    def healthz(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        return respond(
            start_response,
            "200 OK",
            b"ok\n",
            "text/plain; charset=utf-8",
            head_only=ctx.method == "HEAD",
        )

    def metrics_text(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """Prometheus text, for clients in ``server.metrics_allow`` only (others: 404, as if
        there were nothing here)."""
        if not self.metrics_allow.trusts(ctx.environ):
            raise NotFound("no such gateway endpoint")
        return respond(
            start_response,
            "200 OK",
            self.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
            head_only=ctx.method == "HEAD",
        )

    def readyz(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """200 when the state store answers now, else 503 naming the cause."""
        try:
            self.state.ping()
        except StoreUnavailable as exc:
            return json_response(
                ctx.environ,
                start_response,
                "503 Service Unavailable",
                {"status": "unavailable", "cause": f"state store unreachable: {exc}"},
            )
        return json_response(ctx.environ, start_response, "200 OK", {"status": "ready"})
