"""The per-request context: what the pipeline learns about a request once, for every part.

It replaces values smuggled through ``environ``: whether the peer is a trusted front proxy
(whose ``X-Forwarded-Host`` and ``X-Original-URI`` are then believed) and whether the
answer is for an API client (JSON) or a person (a page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.web.pages import is_api_call

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

RESERVED_PREFIX = "/_gateway"


@dataclass(slots=True)
class RequestContext:
    environ: WSGIEnvironment
    method: str
    #: ``PATH_INFO``: decoded, for routing the gateway's own endpoints only.
    path: str
    #: The peer is in ``access.trusted_proxies``.
    trusted_proxy: bool
    #: Set when the answer must be JSON whatever the headers say (``access.api_paths``,
    #: forward-auth's original method); read through ``api``.
    _api: bool | None = None

    @property
    def api(self) -> bool:
        """Answer with JSON, not a page: what the access decision learnt, else the
        contract's test on the request's headers (asked only when an answer needs it)."""
        if self._api is None:
            self._api = is_api_call(self.environ)
        return self._api

    @api.setter
    def api(self, value: bool) -> None:
        self._api = value

    @property
    def reserved(self) -> bool:
        """A path under ``/_gateway/``: the gateway's own, never proxied."""
        path = self.path
        return path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/")

    def forwarded_host(self) -> str | None:
        """The host the browser asked for: a trusted front proxy's ``X-Forwarded-Host``,
        else ``Host``."""
        environ = self.environ
        if self.trusted_proxy and environ.get("HTTP_X_FORWARDED_HOST"):
            return str(environ["HTTP_X_FORWARDED_HOST"])
        host = environ.get("HTTP_HOST")
        return str(host) if host else None

    def original_uri(self) -> str | None:
        """The URI a trusted front proxy says the browser asked for (nginx ``auth_request``
        sends ``X-Original-URI``, Traefik ``X-Forwarded-Uri``)."""
        if not self.trusted_proxy:
            return None
        environ = self.environ
        uri = environ.get("HTTP_X_ORIGINAL_URI") or environ.get("HTTP_X_FORWARDED_URI")
        if not uri or uri.startswith(RESERVED_PREFIX + "/"):
            return None
        return str(uri)

    def original_method(self) -> str:
        """The method of the request a trusted front proxy is asking about (forward-auth)."""
        environ = self.environ
        if not self.trusted_proxy:
            return "GET"
        method = environ.get("HTTP_X_ORIGINAL_METHOD") or environ.get("HTTP_X_FORWARDED_METHOD")
        return str(method or "GET").upper()
