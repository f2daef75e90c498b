"""Reading the gateway's cookies from a request and writing ``Set-Cookie`` for them.

Cookie values the gateway writes are sealed tokens (base64url), so no quoting is needed;
values read back are only ever handed to the codec, which rejects anything it did not seal.

A name may carry one of the prefixes of RFC 6265bis 4.1.3, which browsers enforce whatever
the server asks for: a ``__Secure-`` cookie is stored only with ``Secure``, a ``__Host-``
cookie only with ``Secure``, ``Path=/`` and no ``Domain`` (so no subdomain or sibling host
can toss a cookie of that name at the gateway). :class:`CookieSpec` derives its attributes
from the name, so every cookie the gateway sets under such a name is one browsers keep.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

# Servers join repeated ``Cookie`` lines with ``,``, so a pair of the gateway's may follow
# one; the proxy strips the gateway's cookies by the same rule (a comma-separated piece that
# names one of them), and the two must agree on what a cookie is.
_PAIR_SEPARATOR = re.compile(r"[;,]")

#: Name prefixes browsers hold to their rules (RFC 6265bis 4.1.3), matched in any case.
HOST_PREFIX = "__Host-"
SECURE_PREFIX = "__Secure-"


def cookie_prefix(name: str) -> str | None:
    """:data:`HOST_PREFIX` or :data:`SECURE_PREFIX` when ``name`` starts with it (in any
    case, as browsers match it), else None."""
    for prefix in (HOST_PREFIX, SECURE_PREFIX):
        if name[: len(prefix)].lower() == prefix.lower():
            return prefix
    return None


def request_cookies(environ: WSGIEnvironment, name: str) -> list[str]:
    """Every value the browser sent for ``name`` (a parent domain may add a second one)."""
    header = environ.get("HTTP_COOKIE")
    if not header or name not in header:
        return []
    if ";" not in header and "," not in header:  # the common case: one cookie
        key, sep, value = header.partition("=")
        return [value.strip().strip('"')] if sep and key.strip() == name else []
    values = []
    for part in _PAIR_SEPARATOR.split(header):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            values.append(value.strip().strip('"'))
    return values


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """Where and how one of the gateway's cookies is set.

    A prefixed name wins over the other attributes: a ``__Secure-`` or ``__Host-`` spec is
    always ``secure``, and a ``__Host-`` spec always has path ``/`` and no domain, since a
    browser would drop the cookie otherwise. ``path`` is the narrowest scope the caller
    wants; ``secure`` and ``domain`` come from the config, which refuses a prefix they
    contradict (``check-config``), so in practice only a path is ever widened.
    """

    name: str
    path: str = "/"
    secure: bool = True
    domain: str | None = None

    def __post_init__(self) -> None:
        prefix = cookie_prefix(self.name)
        if prefix is not None:
            object.__setattr__(self, "secure", True)
        if prefix == HOST_PREFIX:
            object.__setattr__(self, "path", "/")
            object.__setattr__(self, "domain", None)

    def set(self, value: str, max_age: int) -> tuple[str, str]:
        expires = formatdate(time.time() + max_age, usegmt=True)
        return self._header(value, max_age, expires)

    def clear(self) -> tuple[str, str]:
        return self._header("", 0, "Thu, 01 Jan 1970 00:00:00 GMT")

    def _header(self, value: str, max_age: int, expires: str) -> tuple[str, str]:
        attributes = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain:
            attributes.append(f"Domain={self.domain}")
        attributes.append(f"Max-Age={max_age}")
        attributes.append(f"Expires={expires}")
        attributes.append("HttpOnly")
        if self.secure:
            attributes.append("Secure")
        attributes.append("SameSite=Lax")
        return ("Set-Cookie", "; ".join(attributes))
