"""Origins (``scheme://host[:port]``): the one reading of where an http(s) URL points.

The config reads ``public_url`` with it, the redirect policy compares targets with it, the
pages build their Content-Security-Policy sources from it and each upstream knows where to
connect and which ``Location`` values are its own through it. ``parse_origin`` reads the
URL with :func:`urllib.parse.urlsplit`, so every one of them agrees on scheme, host and
port, and ``Origin.serialize`` gives the one spelling they all write.

It does not judge the host beyond its shape: ``public_url`` must be a DNS name or an IPv6
address (``gateway.config.fields``), a CSP source may hold only host characters
(``gateway.web.pages``), a redirect target must already be in a narrow form before it is
read at all (``gateway.auth.redirects``), and an upstream may be any name the resolver
knows. Each caller checks what it needs on top.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Origin", "parse_origin"]

_default_ports: Final[Mapping[str, int]] = MappingProxyType({"http": 80, "https": 443})


@dataclass(frozen=True, slots=True)
class Origin:
    """An http(s) origin: equal origins are equal values.

    ``host`` is lower-case (an IPv6 zone is kept as written) and an IPv6 address has no
    brackets, ready for a socket; ``port`` is always set, the scheme's default when the
    URL names none.
    """

    scheme: str
    host: str
    port: int

    @property
    def has_default_port(self) -> bool:
        return self.port == _default_ports[self.scheme]

    @property
    def authority(self) -> str:
        """``host[:port]`` as a URL writes it: an IPv6 address in brackets, the scheme's
        default port left out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.has_default_port else f"{host}:{self.port}"

    def serialize(self) -> str:
        """The canonical ``scheme://host[:port]``."""
        return f"{self.scheme}://{self.authority}"


def parse_origin(url: str, *, bare: bool = False) -> Origin | None:
    """The origin of an absolute ``http``/``https`` URL with a host and a valid port, or
    None when it has none.

    The path, query, fragment and any userinfo are ignored, unless ``bare``: then the URL
    must be the origin alone, with at most a ``/`` after it. The URL is read as given;
    surrounding blanks are the caller's to strip.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in _default_ports or not host:
        return None
    if bare and (
        parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None
    ):
        return None
    if ":" in host:
        # urlsplit checks bracketed hosts too, on the Python versions that have the check.
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return Origin(parts.scheme, host, _default_ports[parts.scheme] if port is None else port)
