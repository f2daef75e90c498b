"""Which upstream serves a request, and the policy that goes with it: the routes.

A ``Route`` is one ``upstreams[]`` entry as the access decision sees it (prefix, host,
``strip_prefix``, ``public``, its own allow list) with the ``Upstream`` transport behind
it. The ``Router`` picks one: routes for the request's ``Host`` first, then the host-less
ones; among them the longest matching prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.auth.access import AllowList
from gateway.identity.templates import HeaderTemplates
from gateway.proxy.pool import Upstream

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateway.config import UpstreamSettings
    from gateway.identity.groups import Groups


class Route:
    """One ``upstreams[]`` entry: where it applies, its own rules, and its upstream."""

    def __init__(self, settings: UpstreamSettings, groups: Groups | None = None) -> None:
        self.prefix = settings.prefix
        self.host = settings.host
        self.strip_prefix = settings.strip_prefix
        self.public = settings.public
        self.allow = (
            AllowList(settings.allow, groups=groups) if settings.allow is not None else None
        )
        self.upstream = Upstream(settings)
        #: Page origins, besides ``public_url``'s, that may open a WebSocket here.
        self.websocket_origins = frozenset(settings.websocket_origins)
        self.websocket_idle_timeout = settings.websocket_idle_timeout
        #: Identity headers under the app's own names, and the assertions' audience.
        self.templates = HeaderTemplates(settings.headers)
        self.audience = settings.audience
        #: Client headers never forwarded: every name any route fills in itself (set by the
        #: Router), so no route passes on a claim another route's app would believe.
        self.drop_keys = self.templates.environ_keys

    def forwarded_target(self, target: str) -> str:
        """The request target for the upstream: ``strip_prefix`` removes the prefix."""
        if not self.strip_prefix or self.prefix == "/":
            return target
        rest = target[len(self.prefix.rstrip("/")) :]
        return rest if rest.startswith("/") else "/" + rest

    def matches(self, path: str) -> bool:
        prefix = self.prefix
        if prefix in ("/", path):
            return True
        if not path.startswith(prefix):
            return False
        return prefix.endswith("/") or path[len(prefix)] in "/?"


class Router:
    """The route for a request: those for its ``Host`` first, then the host-less ones;
    among them the longest matching prefix."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda u: len(u.prefix), reverse=True)
        own_names = frozenset().union(*(route.templates.environ_keys for route in self.routes))
        for route in self.routes:
            route.drop_keys = own_names
        self._by_host: dict[str | None, list[Route]] = {}
        for route in self.routes:
            self._by_host.setdefault(route.host, []).append(route)

    def choose(self, path: str, host: str | None = None) -> Route | None:
        candidates: list[Route] = []
        if host and len(self._by_host) > 1:
            host = host.lower()
            candidates = self._by_host.get(host) or self._by_host.get(_hostname(host)) or []
        fallback: list[Route] = self._by_host.get(None, [])
        for route in (*candidates, *fallback):
            if route.matches(path):
                return route
        return None

    def close(self) -> None:
        for route in self.routes:
            route.upstream.close()


def _hostname(host: str) -> str:
    """``app.example.com:8443`` -> ``app.example.com`` (IPv6 literals keep their brackets)."""
    if host.endswith("]") or ":" not in host:
        return host
    return host.rsplit(":", 1)[0]
