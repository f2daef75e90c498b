"""Sessions in cookies, indexed and revocable through the shared state store.

``RevocableSessionStore`` is the ``SessionStore`` the gateway runs with: the session stays
an encrypted cookie (reading one is a decode, no store round trip), and around it

- a sign-in is recorded in the store's index (who, where from, until when);
- a cookie whose session was revoked (its ``sid``, its user, or everyone) is no session,
  judged on this worker's in-memory copy of the revocations (``RevocationWatcher``);
- signing out revokes the session's ``sid`` everywhere, and ``everywhere`` every session of
  its user, so a copy of the cookie no longer works on any worker of any replica.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.identity.headers import clean_text
from gateway.state.base import Revocations, SessionRecord, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import CookieSessionStore, Session
    from gateway.state.base import StateStore
    from gateway.state.watch import RevocationWatcher

_MAX_USER_AGENT = 512


class RevocableSessionStore:
    def __init__(
        self,
        cookies: CookieSessionStore,
        state: StateStore,
        watcher: RevocationWatcher,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cookies = cookies
        self.cookie = cookies.cookie
        self.state = state
        self.watcher = watcher
        self.clock = clock

    def load(self, environ: WSGIEnvironment) -> tuple[Session, bool] | None:
        """The cookie's session unless it was revoked. Past ``state.max_staleness`` without
        reaching the store, a valid cookie raises ``StoreUnavailable``: a revocation is
        never ignored for longer than that."""
        found = self.cookies.load(environ)
        if found is None:
            return None
        watcher = self.watcher
        watcher.ensure_started()
        if watcher.revokes(found[0]):
            return None
        if watcher.stale:
            raise StoreUnavailable(f"no revocations for over {watcher.max_staleness:g}s")
        return found

    def save(
        self, environ: WSGIEnvironment, session: Session, *, new: bool = False
    ) -> tuple[str, str]:
        header = self.cookies.save(environ, session)
        if new:
            self.state.index_session(
                SessionRecord(
                    sid=session.sid,
                    subject=session.user_key,
                    unionid=session.unionid,
                    nickname=clean_text(session.nickname),  # half an emoji has no UTF-8
                    app_id=session.app_id,
                    provider=session.provider,
                    signed_in_at=session.issued_at,
                    expires_at=session.expires_at,
                    client=str(environ.get("REMOTE_ADDR", "")),
                    user_agent=str(environ.get("HTTP_USER_AGENT", ""))[:_MAX_USER_AGENT],
                )
            )
        return header

    def clear(self, environ: WSGIEnvironment, *, everywhere: bool = False) -> tuple[str, str]:
        found = self.cookies.load(environ)
        if found is not None:
            session = found[0]
            sids = [(session.sid, float(session.expires_at))] if session.sid else []
            users = [u for u in (session.user_key, session.unionid) if u] if everywhere else []
            if sids or users:
                now = self.clock()
                self.state.revoke(sids=sids, users=users, now=now)
                # This worker knows at once; the others within a second, from the store.
                moment = float(int(now))
                self.watcher.revoked.merge(
                    Revocations(sids=dict(sids), users=dict.fromkeys(users, moment))
                )
        return self.cookies.clear(environ)

    def forget(self, predicate: Callable[[Session], bool] | None = None) -> None:
        self.cookies.forget(predicate)
