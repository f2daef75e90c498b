"""Asking the identity provider, now and then, whether a session's authorization stands.

With ``session.revalidate`` set, a session older than that (since login or the last check)
is checked on its next request by the provider that signed it in
(``IdentityProvider.revalidate``; for WeChat, the refresh token sealed in the cookie buys a
fresh access token, which ``/sns/auth`` confirms for the openid). Then:

- the provider confirms: the session is re-issued with ``validated_at`` = now;
- the provider says the authorization is gone (for WeChat 40030, 42002, 42007, or a
  refreshed token it rejects), or no provider of this gateway signed the session in: the
  session ends and the user signs in again;
- the provider cannot be asked (timeouts, outages, busy, quota, a reply that makes no
  sense): the session keeps working until ``session.max_age``. The client logs the cause
  as a warning, this module what became of the session. That worker then leaves the
  provider alone for a while (the interval, at most 30 seconds), so an outage costs one
  timeout per worker instead of one per request.

A browser often sends several requests at the moment a session comes due. One of them asks
the provider; the others of the same worker wait for its answer (single flight), and every
worker remembers recent answers per session for a few seconds. A burst costs the provider one
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

from gateway.providers.base import AuthorizationEnded, CannotRevalidate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from gateway.auth.session import Session
    from gateway.providers.base import IdentityProvider

log = logging.getLogger("gateway.revalidation")

#: How long a worker reuses the provider's answer for one session (a burst of requests).
_REMEMBER: Final = 10.0
#: The longest a worker leaves the provider alone after it could not be asked.
_PAUSE: Final = 30.0


class Revalidator:
    def __init__(
        self,
        interval: float,
        providers: Iterable[IdentityProvider],
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.providers = {(p.name, p.app_id): p for p in providers}
        self.timeout = timeout
        self.clock = clock
        #: Per session: the confirmed session, or None for "gone".
        # Never longer than the interval: a member disabled after one confirmation must
        # lose access at the next revalidation, not when this worker forgets the answer.
        self._recent: TTLCache[str, Session | None] = TTLCache(
            maxsize=4096, ttl=min(_REMEMBER, interval)
        )
        #: Per session: set when the check in flight has an answer.
        self._in_flight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def due(self, session: Session, now: float) -> bool:
        return now - (session.validated_at or session.issued_at) >= self.interval

    def revalidate(self, session: Session) -> Session:
        """The session with a fresh ``validated_at``, or the same one if the provider could
        not be asked; raises AuthorizationEnded when the provider says it is gone."""
        key = hashlib.sha256(
            f"{session.provider}\0{session.app_id}\0{session.user_key}\0"
            f"{session.refresh_token}".encode()
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
            # Another request with this session is asking right now: use its answer.
            waiting.wait(self.timeout + 1)
        try:
            return _answer(self._ask(key, session))
        finally:
            with self._lock:
                del self._in_flight[key]
            flight.set()

    def _ask(self, key: str, session: Session) -> Session | None:
        """The provider's answer: the confirmed session, None when the authorization is gone
        (both remembered), or ``session`` itself when it could not be asked (not
        remembered)."""
        provider = self.providers.get((session.provider, session.app_id))
        if provider is None:
            # No provider of this gateway signed it in: it cannot be checked.
            return self._remember(key, None)
        try:
            confirmed = provider.revalidate(session)
        except AuthorizationEnded as exc:
            log.info("authorization ended for %s (%s)", _who(session), exc)
            return self._remember(key, None)
        except CannotRevalidate as exc:
            pause = min(self.interval, _PAUSE)
            with self._lock:
                self._paused_until = self.clock() + pause
            # The client has logged the cause as a warning; this says what it meant.
            log.info(
                "revalidation of %s skipped, session kept until max_age; the provider"
                " is left alone for %gs: %s",
                _who(session),
                pause,
                exc,
            )
            return session
        fresh = dataclasses.replace(confirmed, validated_at=int(self.clock()))
        return self._remember(key, fresh)

    def _remember(self, key: str, answer: Session | None) -> Session | None:
        with self._lock:
            self._recent[key] = answer
        return answer


def _who(session: Session) -> str:
    """The user as log lines name them: ``openid=...`` or ``userid=...``."""
    return f"userid={session.userid}" if session.userid else f"openid={session.openid}"


def _answer(answer: Session | None) -> Session:
    if answer is None:
        raise AuthorizationEnded
    return answer
