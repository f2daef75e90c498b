"""The WSGI entry: the gateway's reserved ``/_gateway/`` routes, else authenticate and proxy.

A request travels one way: entry -> reserved route or upstream choice -> session and
access decision -> identity headers -> forward -> stream back. Every proxied request
passes the session and access decision in ``Gateway.__call__``; client copies of identity
headers are dropped and the session's identity added in one pass, while the request head
for the upstream is built (``gateway.proxy.build_request_head``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from gateway.access import AccessPolicy
from gateway.cookies import CookieSpec
from gateway.errors import (
    BadRequest,
    GatewayError,
    LoginCancelled,
    LoginError,
    LoginStateInvalid,
    MethodNotAllowed,
    NotAllowed,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.identity import identity_headers
from gateway.login import LoginFlow
from gateway.metrics import Metrics
from gateway.pages import error_response, is_api_call, json_response, respond
from gateway.proxy import ForwardContext, Forwarder, Router, Upstream, request_target
from gateway.redirects import RedirectPolicy
from gateway.session import CookieSessionStore, SessionCodec
from gateway.wechat import WeChatClient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.config import Settings

    Handler = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

log = logging.getLogger("gateway")

RESERVED_PREFIX = "/_gateway"


class Gateway:
    """One gateway, built once per worker process from validated settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        session = settings.session
        self.sessions = CookieSessionStore(
            SessionCodec(session.secret, session.previous_secrets, clock=clock),
            CookieSpec(session.cookie_name, secure=session.secure),
        )
        self.access = AccessPolicy(settings.access.allow, settings.access.public)
        wechat = settings.wechat
        self.wechat = WeChatClient(
            wechat.app_id,
            wechat.app_secret,
            api_base=wechat.api_base,
            open_base=wechat.open_base,
            timeout=wechat.timeout,
            lang=wechat.lang,
        )
        self.login = LoginFlow(
            settings,
            self.sessions,
            self.wechat,
            RedirectPolicy(settings.public_url),
            self.access,
            clock=clock,
        )
        self.router = Router(Upstream(upstream) for upstream in settings.upstreams)
        self.forward = Forwarder(
            self.router,
            ForwardContext(
                public_url=settings.public_url,
                public_scheme=settings.public_url.split(":", 1)[0],
                max_body_size=settings.server.max_body_size,
                gateway_cookies=frozenset({session.cookie_name, self.login.state_cookie.name}),
            ),
        )
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/_gateway/login": (("GET", "HEAD"), self.login.start),
            "/_gateway/callback": (("GET",), self._callback),
            "/_gateway/logout": (("GET", "POST"), self.login.logout),
            "/_gateway/userinfo": (("GET", "HEAD"), self.login.userinfo),
            "/_gateway/healthz": (("GET", "HEAD"), self.healthz),
            "/_gateway/readyz": (("GET", "HEAD"), self.readyz),
            "/_gateway/metrics": (("GET", "HEAD"), self.metrics_text),
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            path = environ.get("PATH_INFO", "")
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                return self._reserved(path, environ, start_response)
            target = request_target(environ)
            upstream = self.router.choose(target)
            if upstream is None:
                raise NotFound("no upstream serves this path")
            found = self.sessions.load(environ)
            if found is None or not self.access.allows(found[0]):
                if self.access.is_public(environ["REQUEST_METHOD"], target.split("?", 1)[0]):
                    self.metrics.inc("requests_total", "public")
                    return self.forward(environ, start_response, upstream, target)
                if found is None:
                    api = is_api_call(environ)
                    self.metrics.inc("requests_total", "unauthorized" if api else "login_redirect")
                    return self.login.challenge(environ, start_response, target)
                self.metrics.inc("requests_total", "forbidden")
                raise NotAllowed(
                    f"Your WeChat account (openid {found[0].openid}) is not on this"
                    " application's allow list.",
                    actions=(("Sign out", "/_gateway/logout"),),
                )
            session, reissue = found
            if reissue:
                start_response = _adding_header(
                    start_response, self.sessions.save(session, self.clock())
                )
            self.metrics.inc("requests_total", "proxied")
            return self.forward(
                environ, start_response, upstream, target, identity_headers(session)
            )
        except GatewayError as error:
            self._count_failure(error)
            if error.status >= 500:
                log.warning("%s %s: %s", environ.get("REQUEST_METHOD"), _path(environ), error)
            return error_response(environ, start_response, error)
        except Exception:
            log.exception(
                "unexpected error on %s %s", environ.get("REQUEST_METHOD"), _path(environ)
            )
            return error_response(environ, _replacing(start_response), GatewayError())

    def _count_failure(self, error: GatewayError) -> None:
        if isinstance(error, UpstreamTimeout):
            self.metrics.inc("upstream_errors_total", "timeout")
        elif isinstance(error, UpstreamError):
            self.metrics.inc("upstream_errors_total", "unavailable")
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
        self.forward.close()
        self.wechat.close()


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
