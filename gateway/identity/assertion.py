"""``X-WeChat-Assertion``: the identity as a signed JWT the app can verify, not just trust.

An app behind the gateway that trusts ``X-WeChat-OpenID`` believes that only the gateway can
reach it. The assertion removes that belief: an ES256 JWT (RFC 7519, signed with PyJWT over
``cryptography``) with ``kid`` in its header, verifiable against ``/_gateway/jwks.json``.

Claims: ``iss`` (``public_url``), ``aud`` (the upstream's ``audience``, default
``public_url``), ``sub`` (the openid; ``wecom:USERID`` for a WeCom member), ``openid``,
``app_id``, ``unionid`` (when there is one), ``nickname`` (as WeChat gave it, control
characters removed, not percent-encoded), ``groups`` (a list), ``sid``, ``provider``,
``iat`` and ``exp`` (``LIFETIME``, 5 minutes, after ``iat``).

Signing costs tens of microseconds, so a worker signs once per session, audience and groups
and reuses the assertion until ``REISSUE`` before it expires: an app always receives one
that is valid for at least another minute.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt

from gateway.identity.headers import clean_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.auth.session import Session
    from gateway.identity.keys import FileKeys, StoredKeys

LIFETIME = 300
REISSUE = 60
_CACHE_LIMIT = 16384


def assertion_claims(
    session: Session, *, issuer: str, audience: str, groups: tuple[str, ...], now: int
) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": issuer, "aud": audience}
    if session.userid:
        claims["sub"] = f"wecom:{session.userid}"
        claims["userid"] = session.userid
        claims["corp_id"] = session.corp_id
        claims["departments"] = list(session.departments)
    elif session.provider == "wecom":
        # Someone outside the company (allow_external): WeCom's openid in the corp.
        claims["sub"] = session.openid
        claims["openid"] = session.openid
        claims["corp_id"] = session.corp_id
    else:
        claims["sub"] = session.openid
        claims["openid"] = session.openid
        claims["app_id"] = session.app_id
        if session.unionid:
            claims["unionid"] = session.unionid
    claims["nickname"] = clean_text(session.nickname)
    claims["groups"] = list(groups)
    claims["sid"] = session.sid
    claims["provider"] = session.provider
    claims["iat"] = now
    claims["exp"] = now + LIFETIME
    return claims


class AssertionSigner:
    """Signs assertions with the current key, each reused until shortly before it expires."""

    def __init__(
        self,
        keys: FileKeys | StoredKeys,
        *,
        issuer: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self._cache: dict[tuple[Session, str, tuple[str, ...]], tuple[str, float]] = {}

    def __call__(self, session: Session, audience: str, groups: tuple[str, ...]) -> str:
        now = self.clock()
        key = (session, audience, groups)
        found = self._cache.get(key)
        if found is not None and now < found[1]:
            return found[0]
        signing = self.keys.current()
        issued = int(now)
        token = jwt.encode(
            assertion_claims(
                session, issuer=self.issuer, audience=audience, groups=groups, now=issued
            ),
            signing.private,
            algorithm="ES256",
            headers={"kid": signing.kid},
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (token, issued + LIFETIME - REISSUE)
        return token
