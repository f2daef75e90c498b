"""Identity headers: what the upstream is told about the signed-in user.

The upstream trusts these headers blindly; that is the whole product. So they are

- stripped: every incoming header whose name, lower-cased with ``_`` read as ``-``, starts
  with ``x-wechat-`` is removed from every request, public paths included. WSGI servers
  map ``X-WeChat-OpenID`` and ``X_WeChat_OpenID`` alike to ``HTTP_X_WECHAT_OPENID`` (and
  gunicorn drops underscore names outright), so one environ-key prefix covers every
  spelling. The proxy applies ``is_client_identity_key`` while it copies headers;
- injected: only from a session the gateway sealed itself, by ``identity_headers`` below,
  appended after the client's headers in the same pass.

Header values must be latin-1 without control characters, so the nickname (UTF-8, emoji,
sometimes raw control characters from WeChat) is cleaned and percent-encoded, leaving
RFC 3986 unreserved characters as they are.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from gateway.auth.session import Session

CLIENT_IDENTITY_PREFIX = "HTTP_X_WECHAT_"

OPENID = "X-WeChat-OpenID"
APPID = "X-WeChat-AppID"
UNIONID = "X-WeChat-UnionID"
NICKNAME = "X-WeChat-Nickname"
AVATAR = "X-WeChat-Avatar"
PROVIDER = "X-WeChat-Provider"
USERID = "X-WeChat-UserID"
CORPID = "X-WeChat-CorpID"
DEPARTMENTS = "X-WeChat-Departments"

# C0 and C1 controls and DEL; WeChat nicknames really do contain some of them.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# JSON lets WeChat send half an emoji ("\ud83d"); it has no UTF-8 form, so it becomes U+FFFD
# rather than bytes that are not UTF-8 at all.
_LONE_SURROGATES = re.compile("[\ud800-\udfff]")
# What may stay literal in a URL header value: RFC 3986 reserved and unreserved characters.
_URL_SAFE = "-._~:/?#[]@!$&'()*+,;=%"


def is_client_identity_key(environ_key: str) -> bool:
    return environ_key.startswith(CLIENT_IDENTITY_PREFIX)


def clean_text(text: str) -> str:
    """``text`` with control characters removed and lone surrogates made U+FFFD: what may
    be shown of a provider's free text (a nickname) outside a header."""
    return _LONE_SURROGATES.sub("\ufffd", _CONTROLS.sub("", text))


def encode_nickname(nickname: str) -> str:
    """Control characters removed, then UTF-8 percent-encoded (unreserved kept)."""
    return quote(utf8(_CONTROLS.sub("", nickname)), safe="-._~")


def encode_avatar(url: str) -> str:
    """The avatar URL as a header-safe value: controls dropped, anything non-ASCII encoded."""
    return quote(utf8(_CONTROLS.sub("", url)), safe=_URL_SAFE)


@lru_cache(maxsize=4096)
def identity_headers(session: Session) -> tuple[tuple[str, str], ...]:
    """The identity headers for a request made with this session, in a fixed order.

    Remembered per session: a browser makes many requests with the same one. A WeCom
    member has a userid, corp id and departments instead of an openid, unionid and app id;
    someone outside the company signed in through WeCom, an openid and the corp id."""
    headers: list[tuple[str, str]] = []
    if session.userid:
        headers.append((USERID, _token(session.userid)))
        headers.append((CORPID, _token(session.app_id)))
        if session.departments:
            headers.append((DEPARTMENTS, ",".join(map(str, session.departments))))
    elif session.provider == "wecom":
        headers.append((CORPID, _token(session.app_id)))
        headers.append((OPENID, _token(session.openid)))
    else:
        headers.append((OPENID, _token(session.openid)))
        headers.append((APPID, _token(session.app_id)))
        if session.unionid:
            headers.append((UNIONID, _token(session.unionid)))
    # Always sent, empty when unknown (no profile: snsapi_base, fetch_profile off; or a user
    # without an avatar), so an app that reads them never misses a header.
    headers.append((NICKNAME, encode_nickname(session.nickname)))
    headers.append((AVATAR, encode_avatar(session.avatar)))
    headers.append((PROVIDER, _token(session.provider)))
    return tuple(headers)


def _token(value: str) -> str:
    # openids, unionids and app ids are ASCII tokens; anything else is encoded, never raw.
    if value.isascii() and value.isprintable():
        return value
    return quote(utf8(value), safe="-._~")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, any lone surrogate (half an emoji from WeChat) as U+FFFD: text that
    came from WeChat can always be encoded, for a header or a response body."""
    return _LONE_SURROGATES.sub("\ufffd", text).encode("utf-8")
