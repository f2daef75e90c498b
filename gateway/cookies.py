"""Reading the gateway's cookies from a request and writing ``Set-Cookie`` for them.

Cookie values the gateway writes are sealed tokens (base64url), so no quoting is needed;
values read back are only ever handed to the codec, which rejects anything it did not seal.
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
    """Where and how one of the gateway's cookies is set."""

    name: str
    path: str = "/"
    secure: bool = True
    domain: str | None = None

    def set(self, value: str, max_age: int) -> tuple[str, str]:
        attributes = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain:
            attributes.append(f"Domain={self.domain}")
        attributes.append(f"Max-Age={max_age}")
        attributes.append(f"Expires={formatdate(time.time() + max_age, usegmt=True)}")
        attributes.append("HttpOnly")
        if self.secure:
            attributes.append("Secure")
        attributes.append("SameSite=Lax")
        return ("Set-Cookie", "; ".join(attributes))

    def clear(self) -> tuple[str, str]:
        attributes = [f"{self.name}=", f"Path={self.path}"]
        if self.domain:
            attributes.append(f"Domain={self.domain}")
        attributes.append("Max-Age=0")
        attributes.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        attributes.append("HttpOnly")
        if self.secure:
            attributes.append("Secure")
        attributes.append("SameSite=Lax")
        return ("Set-Cookie", "; ".join(attributes))
