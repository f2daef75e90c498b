"""Asking WeChat, now and then, whether a session's authorization still stands.

With ``session.revalidate`` set, a session older than that (since login or the last check)
is checked on its next request: the refresh token sealed in the cookie buys a fresh access
token (``/sns/oauth2/refresh_token``), which ``/sns/auth`` confirms for the openid. Then:

- WeChat confirms: the session is re-issued with ``validated_at`` = now;
- WeChat says the authorization is gone (40030, 42002, 42007; a refreshed token it rejects):
  the session ends and the user signs in again;
- WeChat cannot be asked (timeouts, outages, busy, quota): the session keeps working until
  ``session.max_age`` and the attempt is logged; the next request tries again.

A browser often sends several requests at the moment a session comes due. WeChat does not
rotate refresh tokens, so every one of them would succeed anyway, but each worker also
remembers recent answers per session for a few seconds, so the burst costs WeChat one or
two calls instead of one per request, and none of them logs the browser out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import TYPE_CHECKING

from cachetools import TTLCache

from gateway.wechat import AccessTokenInvalid, AuthorizationGone, OpenIDInvalid, WeChatError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from gateway.session import Session
    from gateway.wechat import WeChatClient

log = logging.getLogger("gateway.revalidation")

_GONE = (AuthorizationGone, AccessTokenInvalid, OpenIDInvalid)
_REMEMBER = 10.0


class AuthorizationEnded(Exception):
    """WeChat says the user's authorization for this app no longer stands."""


class Revalidator:
    def __init__(
        self,
        interval: float,
        clients: Mapping[str, WeChatClient],
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.clients = clients
        self.timeout = timeout
        self.clock = clock
        self._recent: TTLCache[str, Session | None] = TTLCache(maxsize=4096, ttl=_REMEMBER)

    def due(self, session: Session, now: float) -> bool:
        return now - (session.validated_at or session.issued_at) >= self.interval

    def revalidate(self, session: Session) -> Session:
        """The session with a fresh ``validated_at``, or the same one if WeChat could not be
        asked; raises AuthorizationEnded when WeChat says it is gone."""
        key = hashlib.sha256(
            f"{session.app_id}\0{session.openid}\0{session.refresh_token}".encode()
        ).hexdigest()
        if key in self._recent:
            remembered = self._recent[key]
            if remembered is None:
                raise AuthorizationEnded
            return remembered
        client = self.clients.get(session.app_id)
        if client is None or not session.refresh_token:
            # Sessions from before revalidation was enabled cannot be checked: sign in again.
            self._recent[key] = None
            raise AuthorizationEnded
        deadline = time.monotonic() + self.timeout
        try:
            token = client.refresh(session.refresh_token, deadline=deadline)
            client.check_auth(token.access_token, session.openid, deadline=deadline)
        except _GONE as exc:
            log.info("authorization ended for openid=%s (errcode %s)", session.openid, exc)
            self._recent[key] = None
            raise AuthorizationEnded from None
        except WeChatError as exc:
            log.warning(
                "revalidation of openid=%s skipped, session kept until max_age: %s",
                session.openid,
                exc,
            )
            return session
        fresh = dataclasses.replace(session, validated_at=int(self.clock()))
        self._recent[key] = fresh
        return fresh
