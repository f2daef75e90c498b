"""The WSGI entry: the gateway's reserved ``/_gateway/`` routes, else authenticate and proxy.

A request travels one way: entry -> reserved endpoint, or route -> access decision ->
identity headers -> forward -> stream back. ``Gateway.__call__`` reads as that path and
nothing else; the parts are built and wired in one place, ``gateway.builder``. Every
failure is a ``GatewayError`` raised on the way and turned into a response in one place,
``gateway.web.pages.error_response``.
"""

from __future__ import annotations

import logging
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

from gateway.auth.decision import Verdict
from gateway.context import RequestContext
from gateway.endpoints import WELL_KNOWN_JWKS_PATH
from gateway.errors import (
    BadRequest,
    ClientAborted,
    CrossSiteWebSocket,
    GatewayError,
    LoginError,
    NotFound,
    PayloadTooLarge,
    RequestBodyError,
    StateUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.http.target import request_target
from gateway.proxy.tunnel import TakenOver
from gateway.proxy.websocket import websocket_handshake
from gateway.server.logs import choose_request_id, request_id
from gateway.state.base import StoreUnavailable
from gateway.web.pages import error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.auth.access import TrustedProxies
    from gateway.auth.decision import AccessDecision
    from gateway.endpoints import Endpoints
    from gateway.identity.compose import Identity
    from gateway.login.flow import LoginFlow
    from gateway.proxy.forward import Forwarder
    from gateway.proxy.tunnel import WebSocketProxy
    from gateway.server.metrics import Metrics
    from gateway.web.pages import Branding

log = logging.getLogger("gateway")


class Gateway:
    """One gateway: the pipeline over parts built by ``gateway.builder.build_gateway``."""

    def __init__(
        self,
        *,
        trusted_proxies: TrustedProxies,
        access: AccessDecision,
        login: LoginFlow,
        forward: Forwarder,
        websocket: WebSocketProxy,
        identity: Identity,
        endpoints: Endpoints,
        metrics: Metrics,
        branding: Branding,
        public_url: str,
    ) -> None:
        self.trusted_proxies = trusted_proxies
        self.access = access
        self.login = login
        self.forward = forward
        self.websocket = websocket
        self.identity = identity
        self.endpoints = endpoints
        self.metrics = metrics
        self.branding = branding
        self.public_url = public_url

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        metrics = self.metrics
        started = perf_counter()
        metrics.add("requests_in_flight", 1)
        try:
            answer = self.handle(environ, start_response)
        finally:
            metrics.add("requests_in_flight", -1)
        if type(answer) is not TakenOver:  # a tunnel's life is not a request's latency
            metrics.observe("request_duration_seconds", perf_counter() - started)
        return answer

    def handle(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # One id for the request: in its log lines, to the app and back to the client.
        rid = choose_request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ["gateway.request_id"] = rid
        request_id.set(rid)
        # The gateway's own response fields, after the answer's: a forwarded answer takes
        # them as they are, every other answer through ``start_response``.
        extra = [("X-Request-ID", rid)]
        server_start_response = start_response
        start_response = _adding_headers(start_response, extra)
        ctx = RequestContext(
            environ,
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            self.trusted_proxies.trusts(environ),
        )
        try:
            if ctx.reserved or ctx.path == WELL_KNOWN_JWKS_PATH:
                return self.endpoints(ctx, start_response)
            target = request_target(environ)
            host = environ.get("HTTP_HOST")
            raw_path = target.split("?", 1)[0]
            route = self.access.route(raw_path, host)
            if route is None:
                raise NotFound("no upstream serves this path")
            # A WebSocket is answered like an API call, and only opened by the right pages.
            websocket = False
            if "HTTP_UPGRADE" in environ:
                try:
                    websocket = websocket_handshake(environ)
                except GatewayError:
                    ctx.api = True  # a malformed handshake is answered like an API call
                    raise
            if websocket:
                ctx.api = True
                try:
                    self.websocket.check_origin(environ, route)
                except CrossSiteWebSocket:
                    self.login.audit(
                        "denied",
                        environ,
                        reason="cross_site_websocket",
                        path=raw_path,
                        origin=str(environ.get("HTTP_ORIGIN", ""))[:200],
                    )
                    raise
            decision = self.access.decide(ctx, route, ctx.method, raw_path)
            verdict = decision.verdict
            if verdict is Verdict.FORBIDDEN:
                self.metrics.inc("requests_total", "forbidden")
                self.login.audit(
                    "denied", environ, session=decision.session, reason="not_allowed", path=raw_path
                )
                raise self.login.forbidden(decision)  # the page carries any cookie to set
            if decision.set_cookie is not None:
                extra.insert(0, decision.set_cookie)
            if verdict is Verdict.CHALLENGE:
                self.metrics.inc("requests_total", "unauthorized" if ctx.api else "login_redirect")
                return self.login.challenge(ctx, start_response, self.login.return_to(target, host))
            session = decision.session if verdict is not Verdict.ANONYMOUS else None
            self.metrics.inc("requests_total", "proxied" if session is not None else "public")
            identity = (
                self.identity.headers(session, route.audience, route.templates)
                if session is not None
                else ()
            )
            if websocket:
                return self.websocket(
                    environ, start_response, route, target, identity, session, decision.set_cookie
                )
            return self.forward(environ, server_start_response, route, target, identity, extra)
        except StoreUnavailable as exc:
            log.warning("%s %s: state store unavailable: %s", ctx.method, _path(environ), exc)
            return error_response(
                environ, start_response, StateUnavailable(), api=ctx.api, branding=self.branding
            )
        except GatewayError as error:
            self._count_failure(error)
            # Sign-in failures were logged already, with errcode and hint, by the client.
            if (error.status >= 500 and not isinstance(error, LoginError)) or isinstance(
                error, RequestBodyError
            ):
                log.warning("%s %s: %s", ctx.method, _path(environ), error)
            return error_response(
                environ, start_response, error, api=ctx.api, branding=self.branding
            )
        except Exception:
            log.exception("unexpected error on %s %s", ctx.method, _path(environ))
            return error_response(
                environ,
                _replacing(start_response),
                GatewayError(),
                api=ctx.api,
                branding=self.branding,
            )

    def _count_failure(self, error: GatewayError) -> None:
        if isinstance(error, UpstreamTimeout):
            self.metrics.inc("upstream_errors_total", "timeout")
        elif isinstance(error, UpstreamError):
            self.metrics.inc("upstream_errors_total", "unavailable")
        elif isinstance(error, ClientAborted):
            self.metrics.inc("requests_total", "client_aborted")
        elif isinstance(error, (BadRequest, PayloadTooLarge)):
            self.metrics.inc("requests_total", "rejected")

    def stopping(self) -> None:
        """The worker was asked to stop: requests in flight finish; WebSockets get
        ``server.graceful_timeout``, then a close frame with 1001."""
        self.websocket.tunnels.stopping()

    def close(self) -> None:
        watcher = getattr(self.access.sessions, "watcher", None)
        if watcher is not None:
            watcher.stop()
        self.access.router.close()
        self.login.close()
        self.endpoints.state.close()


def _replacing(start_response: StartResponse) -> StartResponse:
    """``start_response`` for the page of an unexpected error: PEP 3333 ``exc_info`` lets the
    server replace headers not yet sent, or abort the connection if they were. (Gateway
    errors are raised before any ``start_response`` by construction.)"""
    exc_info = sys.exc_info()

    def wrapped(status: str, headers: list[tuple[str, str]], _: Any = None) -> Any:
        return start_response(status, headers, exc_info)

    return wrapped


def _adding_headers(start_response: StartResponse, extra: list[tuple[str, str]]) -> StartResponse:
    """``start_response`` that adds ``extra`` (as it is when called) to the response."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, *extra], exc_info)

    return wrapped


def _path(environ: WSGIEnvironment) -> str:
    """The path for a log line: never the query, which may carry a code or a token."""
    return str(environ.get("PATH_INFO", ""))[:200]
