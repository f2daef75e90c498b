"""Asking WeChat, now and then, whether a session's authorization still stands.

With ``session.revalidate`` set, a session older than that (since login or the last check)
is checked on its next request: the refresh token sealed in the cookie buys a fresh access
token (``/sns/oauth2/refresh_token``), which ``/sns/auth`` confirms for the openid. Then:

- WeChat confirms: the session is re-issued with ``validated_at`` = now;
- WeChat says the authorization is gone (40030, 42002, 42007; a refreshed token it rejects):
  the session ends and the user signs in again;
- WeChat cannot be asked (timeouts, outages, busy, quota, a reply that makes no sense): the
  session keeps working until ``session.max_age``. The client logs the cause as a warning,
  this module what became of the session. That worker then leaves WeChat alone for a while
  (the interval, at most 30 seconds), so an outage costs one timeout per worker instead of
  one per request.

A browser often sends several requests at the moment a session comes due. One of them asks
WeChat; the others of the same worker wait for its answer (single flight), and every
worker remembers recent answers per session for a few seconds. A burst costs WeChat one
check per worker, and none of its requests logs the browser out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Final

from cachetools import TTLCache

from gateway.providers.wechat.client import (
    AccessTokenInvalid,
    AuthorizationGone,
    OpenIDInvalid,
    WeChatError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from gateway.auth.session import Session
    from gateway.providers.wechat.client import WeChatClient

log = logging.getLogger("gateway.revalidation")

_GONE = (AuthorizationGone, AccessTokenInvalid, OpenIDInvalid)
#: How long a worker reuses WeChat's answer for one session (a burst of requests).
_REMEMBER: Final = 10.0
#: The longest a worker leaves WeChat alone after it could not be asked.
_PAUSE: Final = 30.0


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
        #: Per session: the confirmed session, or None for "gone".
        self._recent: TTLCache[str, Session | None] = TTLCache(maxsize=4096, ttl=_REMEMBER)
        #: Per session: set when the check in flight has an answer.
        self._in_flight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def due(self, session: Session, now: float) -> bool:
        return now - (session.validated_at or session.issued_at) >= self.interval

    def revalidate(self, session: Session) -> Session:
        """The session with a fresh ``validated_at``, or the same one if WeChat could not be
        asked; raises AuthorizationEnded when WeChat says it is gone."""
        key = hashlib.sha256(
            f"{session.app_id}\0{session.openid}\0{session.refresh_token}".encode()
        ).hexdigest()
        while True:
            with self._lock:
                if key in self._recent:
                    return _answer(self._recent[key])
                if self.clock() < self._paused_until:
                    return session
                waiting = self._in_flight.get(key)
                if waiting is None:
                    flight = self._in_flight[key] = threading.Event()
                    break
            # Another request with this session is asking WeChat right now: use its answer.
            waiting.wait(self.timeout + 1)
        try:
            return _answer(self._ask(key, session))
        finally:
            with self._lock:
                del self._in_flight[key]
            flight.set()

    def _ask(self, key: str, session: Session) -> Session | None:
        """WeChat's answer: the confirmed session, None when the authorization is gone (both
        remembered), or ``session`` itself when WeChat could not be asked (not remembered)."""
        client = self.clients.get(session.app_id)
        if client is None or not session.refresh_token:
            # Sessions from before revalidation was enabled cannot be checked: sign in again.
            return self._remember(key, None)
        # On the client's clock: both calls and their retries end within wechat.timeout.
        deadline = time.monotonic() + self.timeout
        try:
            token = client.refresh(session.refresh_token, deadline=deadline)
            client.check_auth(token.access_token, session.openid, deadline=deadline)
        except _GONE as exc:
            log.info("authorization ended for openid=%s (%s)", session.openid, exc)
            return self._remember(key, None)
        except WeChatError as exc:
            pause = min(self.interval, _PAUSE)
            with self._lock:
                self._paused_until = self.clock() + pause
            # The client has logged the cause as a warning; this says what it meant.
            log.info(
                "revalidation of openid=%s skipped, session kept until max_age; WeChat is"
                " left alone for %gs: %s",
                session.openid,
                pause,
                exc,
            )
            return session
        fresh = dataclasses.replace(
            session,
            validated_at=int(self.clock()),
            # WeChat does not renew refresh tokens today; keep whichever it hands back.
            refresh_token=token.refresh_token or session.refresh_token,
        )
        return self._remember(key, fresh)

    def _remember(self, key: str, answer: Session | None) -> Session | None:
        with self._lock:
            self._recent[key] = answer
        return answer


def _answer(answer: Session | None) -> Session:
    if answer is None:
        raise AuthorizationEnded
    return answer
