"""The request target exactly as the client sent it, refused when a browser would never
send it (bad escapes, raw control or non-ASCII characters, asterisk or authority form)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from gateway.errors import BadRequest

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNENCODED = re.compile(r"[\x00-\x20\x7f]")


def request_target(environ: WSGIEnvironment) -> str:
    """The request target exactly as the client sent it, in origin form.

    ``PATH_INFO`` is already percent-decoded (``%2F`` would become ``/``), so the raw URI
    from the server is used. Targets a browser would never send are refused here, so that
    nothing downstream has to guess what an ambiguous one means.
    """
    raw: str | None = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,:@!$&'()*+~"
        )
        query = environ.get("QUERY_STRING")
        if query:
            raw = f"{raw}?{query}"
    if not raw.startswith("/"):
        if raw == "*" or "://" not in raw:
            raise BadRequest("the request target must be a path")
        # Absolute form (RFC 9112 3.2.2): only the path and query are forwarded.
        rest = raw.split("://", 1)[1]
        slash = rest.find("/")
        question = rest.find("?")
        if slash == -1 or (question != -1 and question < slash):
            raw = "/" + (rest[question:] if question != -1 else "")
        else:
            raw = rest[slash:]
    path = raw.split("?", 1)[0]
    _check_percent_encoding(path)
    return raw.split("#", 1)[0]


def _check_percent_encoding(path: str) -> None:
    if "%" in path and _BAD_ESCAPE.search(path):
        raise BadRequest("the path has an invalid percent-encoding")
    if not path.isascii() or _UNENCODED.search(path):
        raise BadRequest("the path contains characters that must be percent-encoded")
