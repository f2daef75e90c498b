"""The WSGI entry: the gateway's reserved ``/_gateway/`` routes, else authenticate and proxy.

A request travels one way: entry -> reserved route or upstream choice -> session and
access decision -> identity headers -> forward -> stream back. The session and access
decision is made in one place, ``Gateway._decide``, for proxied requests and forward-auth
checks alike; client copies of identity headers are dropped and the session's identity
added in one pass while the request head for the upstream is built
(``gateway.proxy.build_request_head``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.auth.access import AccessPolicy
from gateway.auth.cookies import CookieSpec
from gateway.auth.redirects import RedirectPolicy
from gateway.auth.session import CookieSessionStore, Session, SessionCodec
from gateway.errors import (
    BadRequest,
    ClientAborted,
    GatewayError,
    LoginCancelled,
    LoginError,
    LoginStateInvalid,
    MethodNotAllowed,
    NotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestBodyError,
    SignInRequired,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.http.paths import policy_path
from gateway.http.target import request_target
from gateway.identity.headers import identity_headers
from gateway.login.flow import (
    CALLBACK_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    RESERVED_PREFIX,
    TRUSTED_PROXY_KEY,
    LoginFlow,
    forwarded_host,
    original_uri,
)
from gateway.login.ledger import CallbackLedger
from gateway.login.revalidation import AuthorizationEnded, Revalidator
from gateway.providers.wechat.client import WeChatClient
from gateway.proxy.forward import Forwarder
from gateway.proxy.request import ForwardContext
from gateway.proxy.router import Route, Router
from gateway.server.metrics import Metrics
from gateway.web.pages import API_CALL_KEY, error_response, is_api_call, json_response, respond

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.config import Settings

    Handler = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

log = logging.getLogger("gateway")

# What makes a path read differently once resolved: escapes, dots, backslashes, ';', '//'.
_UNUSUAL_PATH = re.compile(r"[%\\;]|/\.|//")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a request: ``identity`` (forward as this user), ``anonymous``
    (forward without identity: public), ``forbidden`` (403) or ``challenge`` (log in)."""

    kind: str
    session: Session | None = None
    set_cookie: tuple[str, str] | None = None


class Gateway:
    """One gateway, built once per worker process from validated settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        ledger: CallbackLedger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.access = AccessPolicy(settings.access)
        self.public_scheme = settings.public_url.partition("://")[0]
        wechat = settings.wechat
        self.clients = {
            "qr": WeChatClient(
                wechat.app_id,
                wechat.app_secret,
                api_base=wechat.api_base,
                open_base=wechat.open_base,
                timeout=wechat.timeout,
                lang=wechat.lang,
            )
        }
        if wechat.official_account is not None:
            self.clients["oa"] = WeChatClient(
                wechat.official_account.app_id,
                wechat.official_account.app_secret,
                api_base=wechat.api_base,
                open_base=wechat.open_base,
                timeout=wechat.timeout,
                lang=wechat.lang,
                config_key="wechat.official_account",
            )
        session = settings.session
        self.sessions = CookieSessionStore(
            SessionCodec(session.secret, session.previous_secrets, clock=clock),
            CookieSpec(session.cookie_name, secure=session.secure, domain=session.cookie_domain),
            clock=clock,
            app_ids=frozenset(client.app_id for client in self.clients.values()),
        )
        self.revalidator = (
            Revalidator(
                session.revalidate,
                {client.app_id: client for client in self.clients.values()},
                timeout=wechat.timeout,
                clock=clock,
            )
            if session.revalidate is not None
            else None
        )
        self.router = Router(Route(upstream) for upstream in settings.upstreams)
        self.login = LoginFlow(
            settings,
            self.sessions,
            self.clients,
            RedirectPolicy(settings.public_url, settings.redirect_domains),
            self._may_enter,
            ledger if ledger is not None else CallbackLedger(),
            clock=clock,
        )
        self.forward = Forwarder(
            ForwardContext(
                public_url=settings.public_url,
                public_scheme=self.public_scheme,
                max_body_size=settings.server.max_body_size,
                gateway_cookies=frozenset({session.cookie_name, self.login.state_cookie.name}),
                client_body_timeout=settings.server.client_body_timeout,
            ),
        )
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            LOGIN_PATH: (("GET", "HEAD"), self.login.start),
            CALLBACK_PATH: (("GET",), self._callback),
            LOGOUT_PATH: (("GET", "POST"), self.login.logout),
            "/_gateway/userinfo": (("GET", "HEAD"), self.userinfo),
            "/_gateway/auth": (("GET", "HEAD"), self.forward_auth),
            "/_gateway/healthz": (("GET", "HEAD"), self.healthz),
            "/_gateway/readyz": (("GET", "HEAD"), self.readyz),
            "/_gateway/metrics": (("GET", "HEAD"), self.metrics_text),
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if self.access.trusted_proxies.trusts(environ):
                environ[TRUSTED_PROXY_KEY] = True
            path = environ.get("PATH_INFO", "")
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                return self._reserved(path, environ, start_response)
            target = request_target(environ)
            host = environ.get("HTTP_HOST")
            raw_path = target.split("?", 1)[0]
            upstream = self._route(raw_path, host)
            if upstream is None:
                raise NotFound("no upstream serves this path")
            method = environ["REQUEST_METHOD"]
            decision = self._decide(environ, upstream, method, raw_path)
            if decision.kind == "forbidden":
                if self.access.is_api_path(raw_path):
                    environ[API_CALL_KEY] = True
                raise self._forbidden(decision)  # the error page carries any cookie to set
            if decision.set_cookie is not None:
                start_response = _adding_header(start_response, decision.set_cookie)
            if decision.kind == "challenge":
                return self._challenge(environ, start_response, target, host)
            if decision.kind == "anonymous":
                self.metrics.inc("requests_total", "public")
                return self.forward(environ, start_response, upstream, target)
            assert decision.session is not None
            self.metrics.inc("requests_total", "proxied")
            return self.forward(
                environ, start_response, upstream, target, identity_headers(decision.session)
            )
        except GatewayError as error:
            self._count_failure(error)
            # Sign-in failures were logged already, with errcode and hint, by the client.
            if (error.status >= 500 and not isinstance(error, LoginError)) or isinstance(
                error, RequestBodyError
            ):
                log.warning("%s %s: %s", environ.get("REQUEST_METHOD"), _path(environ), error)
            return error_response(environ, start_response, error, branding=self.login.branding)
        except Exception:
            log.exception(
                "unexpected error on %s %s", environ.get("REQUEST_METHOD"), _path(environ)
            )
            return error_response(
                environ, _replacing(start_response), GatewayError(), branding=self.login.branding
            )

    # -- the decision ----------------------------------------------------------------------

    def _route(self, raw_path: str, host: str | None) -> Route | None:
        """The upstream for a path; 400 if another reading of the path picks another one.

        Rules (allow lists, public upstreams) belong to the upstream, so ``/pub/../admin``
        must not be judged by ``/pub``'s rules while a shared backend serves ``/admin``.
        """
        upstream = self.router.choose(raw_path, host)
        if _UNUSUAL_PATH.search(raw_path):
            try:
                resolved = policy_path(raw_path)
            except BadRequest:
                return upstream  # unreadable: public-path checks refuse it where it matters
            if self.router.choose(resolved, host) is not upstream or (
                resolved == RESERVED_PREFIX or resolved.startswith(RESERVED_PREFIX + "/")
            ):
                # Another upstream's, or the gateway's own /_gateway/ once resolved.
                raise BadRequest("the path is ambiguous: it reads differently once resolved")
        return upstream

    def _allowed_anywhere(self, session: Session) -> bool:
        return self.access.allows(session) or any(
            upstream.allow is not None and upstream.allow.allows(session)
            for upstream in self.router.routes
        )

    def _may_enter(self, session: Session, target: str) -> bool:
        """Whether a signing-in user may use the target they came for (its upstream's rules)."""
        parts = urlsplit(target)
        upstream = self.router.choose(parts.path or "/", parts.netloc or None)
        return self.access.allows(session, upstream.allow if upstream is not None else None)

    def _decide(
        self, environ: WSGIEnvironment, upstream: Route | None, method: str, raw_path: str
    ) -> Decision:
        """Who is asking and whether they may: the one place access is decided."""
        session, set_cookie = self._session(environ)
        allow = upstream.allow if upstream is not None else None
        if session is not None and self.access.allows(session, allow):
            return Decision("identity", session, set_cookie)
        if (
            (upstream is not None and upstream.public)
            or self.access.is_preflight(environ)
            or self.access.is_public(method, raw_path)
        ):
            return Decision("anonymous", None, set_cookie)
        if session is not None:
            # A user refused everywhere keeps no session; one refused only by this upstream's
            # own list keeps it for the others.
            if not self._allowed_anywhere(session):
                set_cookie = self.sessions.clear()
            return Decision("forbidden", session, set_cookie)
        return Decision("challenge", None, set_cookie)

    def _session(self, environ: WSGIEnvironment) -> tuple[Session | None, tuple[str, str] | None]:
        """The request's session, revalidated with WeChat when due, and any cookie to set."""
        found = self.sessions.load(environ)
        if found is None:
            return None, None
        session, reissue = found
        if self.revalidator is not None and self.revalidator.due(session, self.clock()):
            try:
                fresh = self.revalidator.revalidate(session)
            except AuthorizationEnded:
                return None, self.sessions.clear()
            if fresh is not session:
                session, reissue = fresh, True
        return session, self.sessions.save(session, self.clock()) if reissue else None

    def _challenge(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        target: str,
        host: str | None,
    ) -> Iterable[bytes]:
        api = is_api_call(environ) or self.access.is_api_path(target.split("?", 1)[0])
        self.metrics.inc("requests_total", "unauthorized" if api else "login_redirect")
        return self.login.challenge(
            environ, start_response, self.login.return_to(target, host), api=api
        )

    def _forbidden(self, decision: Decision) -> NotAllowed:
        self.metrics.inc("requests_total", "forbidden")
        assert decision.session is not None
        return NotAllowed(
            f"openid: {decision.session.openid}",
            actions=(
                ("Sign out", self.settings.public_url + LOGOUT_PATH),
                ("Sign in with another account", self.login.login_url()),
            ),
            extra_headers=(decision.set_cookie,) if decision.set_cookie else (),
        )

    # -- forward-auth ------------------------------------------------------------------------

    def forward_auth(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """``/_gateway/auth`` for nginx ``auth_request`` and Traefik ``forwardAuth``.

        2xx with the identity as response headers, 401 without a session, 403 when not
        allowed. The original URI, method and host are taken from the front proxy's headers
        only when it is a configured trusted proxy.
        """
        uri = original_uri(environ) or "/"
        method = "GET"
        if environ.get(TRUSTED_PROXY_KEY):
            method = (
                environ.get("HTTP_X_ORIGINAL_METHOD")
                or environ.get("HTTP_X_FORWARDED_METHOD")
                or "GET"
            ).upper()
        host = forwarded_host(environ)
        path = uri.split("?", 1)[0]
        upstream = self._route(path, host)
        decision = self._decide(environ, upstream, method, path)
        extra = [decision.set_cookie] if decision.set_cookie is not None else []
        # What the original request was decides page or JSON, not this check's own GET.
        if method not in ("GET", "HEAD") or self.access.is_api_path(path):
            environ[API_CALL_KEY] = True
        if decision.kind == "challenge":
            self.metrics.inc("requests_total", "unauthorized")
            login_url = self.login.login_url(
                self.login.redirects.safe_target(self.login.return_to(uri, host))
            )
            # nginx only reads the status; Traefik shows this page, with its sign-in link.
            raise SignInRequired(
                actions=(("Sign in", login_url),),
                extra_headers=(("WWW-Authenticate", 'WeChat realm="wechat-gateway"'), *extra),
            )
        if decision.kind == "forbidden":
            raise self._forbidden(decision)
        headers = identity_headers(decision.session) if decision.session is not None else []
        return respond(
            start_response,
            "200 OK",
            b"",
            "text/plain; charset=utf-8",
            [*headers, *extra],
            head_only=True,
        )

    # -- reserved endpoints -------------------------------------------------------------------

    def _count_failure(self, error: GatewayError) -> None:
        if isinstance(error, UpstreamTimeout):
            self.metrics.inc("upstream_errors_total", "timeout")
        elif isinstance(error, UpstreamError):
            self.metrics.inc("upstream_errors_total", "unavailable")
        elif isinstance(error, ClientAborted):
            self.metrics.inc("requests_total", "client_aborted")
        elif isinstance(error, (BadRequest, PayloadTooLarge)):
            self.metrics.inc("requests_total", "rejected")

    def _callback(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.login.callback(environ, start_response)
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

    def _reserved(
        self, path: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        self.metrics.inc("requests_total", "gateway_endpoint")
        route = self.routes.get(path)
        if route is None:
            raise NotFound("no such gateway endpoint")
        methods, handler = route
        if environ.get("REQUEST_METHOD") not in methods:
            raise MethodNotAllowed(methods)
        return handler(environ, start_response)

    def userinfo(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/userinfo``: the session's identity as JSON, or 401."""
        session, set_cookie = self._session(environ)
        extra = [set_cookie] if set_cookie is not None else []
        if session is None:
            payload: dict[str, object] = {
                "error": "unauthorized",
                "login_url": self.login.login_url(),
            }
            return json_response(environ, start_response, "401 Unauthorized", payload, extra)
        payload = {
            "openid": session.openid,
            "unionid": session.unionid,
            "app_id": session.app_id,
            "nickname": session.nickname,
            "avatar": session.avatar,
        }
        return json_response(environ, start_response, "200 OK", payload, extra)

    def healthz(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return respond(
            start_response,
            "200 OK",
            b"ok\n",
            "text/plain; charset=utf-8",
            head_only=environ.get("REQUEST_METHOD") == "HEAD",
        )

    def metrics_text(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        return respond(
            start_response,
            "200 OK",
            self.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
            head_only=environ.get("REQUEST_METHOD") == "HEAD",
        )

    def readyz(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # Sessions live in the cookie itself, so there is no store that could be down.
        return json_response(environ, start_response, "200 OK", {"status": "ready"})

    def close(self) -> None:
        self.router.close()
        for client in self.clients.values():
            client.close()


def _replacing(start_response: StartResponse) -> StartResponse:
    """``start_response`` for the page of an unexpected error: PEP 3333 ``exc_info`` lets the
    server replace headers not yet sent, or abort the connection if they were. (Gateway
    errors are raised before any ``start_response`` by construction.)"""
    exc_info = sys.exc_info()

    def wrapped(status: str, headers: list[tuple[str, str]], _: Any = None) -> Any:
        return start_response(status, headers, exc_info)

    return wrapped


def _adding_header(start_response: StartResponse, header: tuple[str, str]) -> StartResponse:
    """``start_response`` that adds one header (a re-issued session cookie) to the response."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, header], exc_info)

    return wrapped


def _path(environ: WSGIEnvironment) -> str:
    """The path for a log line: never the query, which may carry a code or a token."""
    return str(environ.get("PATH_INFO", ""))[:200]
