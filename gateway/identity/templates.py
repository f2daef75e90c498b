"""``upstreams[].headers``: identity headers under the app's own names.

Grafana's ``auth.proxy`` reads ``X-WEBAUTH-USER``, Gitea's reverse-proxy login
``X-WEBAUTH-USER`` too, Radicale ``X-Remote-User``... Each configured name is set from a
template over the user's fields::

    headers:
      X-WEBAUTH-USER: "{openid}"
      X-WEBAUTH-NAME: "{nickname}"
      X-Remote-User: "wechat-{openid}"

Fields: ``openid``, ``unionid``, ``app_id``, ``nickname``, ``avatar``, ``groups``,
``userid``, ``corp_id``. Each value is inserted percent-encoded like the nickname header
(UTF-8, RFC 3986 unreserved characters kept), so no value can break a header line or smuggle
a second one; ``groups`` is the comma-joined list of encoded names; a field the user does
not have is the empty string. ``{{`` and ``}}`` are literal braces.

The client's copies of these names, in any case and with ``_`` or ``-``, are removed from
every request to that upstream, public paths included, and to every other upstream too (two
routes may lead to the same app): the server maps every spelling to the same environ key,
which is what ``environ_keys`` lists.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from gateway.identity.headers import encode_nickname

if TYPE_CHECKING:
    from gateway.auth.session import Session

FIELDS = ("openid", "unionid", "app_id", "nickname", "avatar", "groups", "userid", "corp_id")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_LITERAL = re.compile(r"[\x20-\x7e]*")
#: Names a template may not set: the framing and routing of the request, the gateway's own
#: identity and forwarding headers, and hop-by-hop ones.
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
        "keep-alive",
        "te",
        "trailer",
        "expect",
        "cookie",
        "proxy-connection",
        "proxy-authorization",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    }
)


def check_header_name(name: str) -> str | None:
    """Why ``name`` cannot be a template header, or None."""
    if not _TOKEN.fullmatch(name):
        return "must be a header name (letters, digits and -)"
    lower = name.lower().replace("_", "-")
    if lower.startswith("x-wechat-"):
        return "X-WeChat-* headers are the gateway's own"
    if lower in _RESERVED or lower.startswith(("sec-", "proxy-")):
        return "the gateway sets or removes this header itself"
    return None


def parse_template(template: str) -> list[tuple[str, str | None]]:
    """``(literal, field)`` pieces; ``ValueError`` for unknown fields or bad syntax."""
    if not isinstance(template, str):
        raise ValueError("must be a string")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError("unbalanced { or } (write {{ and }} for literal braces)") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if not _LITERAL.fullmatch(literal):
            raise ValueError("literal text must be printable ASCII")
        if field is not None and (spec or conversion or field not in FIELDS):
            raise ValueError(f"unknown field {{{field}}}; fields: {', '.join(FIELDS)}")
        pieces.append((literal, field))
    return pieces


def environ_key(name: str) -> str:
    """The environ key every spelling of header ``name`` arrives under."""
    return "HTTP_" + name.upper().replace("-", "_")


class HeaderTemplates:
    """One upstream's templates, ready to fill in."""

    __slots__ = ("_templates", "environ_keys")

    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self._templates = tuple((name, parse_template(text)) for name, text in headers)
        self.environ_keys = frozenset(environ_key(name) for name, _ in headers)

    def __bool__(self) -> bool:
        return bool(self._templates)

    def render(self, session: Session, groups: tuple[str, ...]) -> list[tuple[str, str]]:
        values = {
            "openid": session.openid,
            "unionid": session.unionid or "",
            "app_id": session.app_id if session.provider == "wechat" else "",
            "nickname": session.nickname,
            "avatar": session.avatar,
            "userid": session.userid or "",
            "corp_id": session.corp_id or "",
        }
        encoded_groups = ",".join(encode_nickname(name) for name in groups)
        rendered = []
        for name, pieces in self._templates:
            parts = []
            for literal, field in pieces:
                parts.append(literal)
                if field == "groups":
                    parts.append(encoded_groups)
                elif field is not None:
                    parts.append(encode_nickname(values[field]))
            rendered.append((name, "".join(parts)))
        return rendered
