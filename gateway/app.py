"""The WSGI entry: the gateway's reserved ``/_gateway/`` routes, else authenticate and proxy.

A request travels one way: entry -> reserved route or upstream choice -> session and
access decision -> identity headers -> forward -> stream back. Authentication happens in
exactly one place, ``Gateway._authenticate``, which every proxied request passes through.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.pages import error_response, json_response, respond
from gateway.proxy import ForwardContext, Forwarder, Router, Upstream, request_target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.config import Settings

    Handler = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

log = logging.getLogger("gateway")

RESERVED_PREFIX = "/_gateway"


class Gateway:
    """One gateway, built once per worker process from validated settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(Upstream(upstream) for upstream in settings.upstreams)
        self.forward = Forwarder(
            self.router,
            ForwardContext(
                public_url=settings.public_url,
                public_scheme=settings.public_url.split(":", 1)[0],
                max_body_size=settings.server.max_body_size,
                gateway_cookies=frozenset({settings.session.cookie_name}),
            ),
        )
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/_gateway/healthz": (("GET", "HEAD"), self.healthz),
            "/_gateway/readyz": (("GET", "HEAD"), self.readyz),
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
            identity = self._authenticate(environ)
            return self.forward(environ, start_response, upstream, target, identity)
        except GatewayError as error:
            if error.status >= 500:
                log.warning("%s %s: %s", environ.get("REQUEST_METHOD"), _path(environ), error)
            return error_response(environ, start_response, error)
        except Exception:
            log.exception(
                "unexpected error on %s %s", environ.get("REQUEST_METHOD"), _path(environ)
            )
            return error_response(environ, start_response, GatewayError())

    def _authenticate(self, environ: WSGIEnvironment) -> list[tuple[str, str]]:
        """The identity headers for this request; the single place authentication plugs in."""
        return []

    def _reserved(
        self, path: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
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

    def readyz(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # Sessions live in the cookie itself, so there is no store that could be down.
        return json_response(environ, start_response, "200 OK", {"status": "ready"})

    def close(self) -> None:
        self.forward.close()


def _path(environ: WSGIEnvironment) -> str:
    return str(environ.get("RAW_URI") or environ.get("PATH_INFO", ""))[:200]
