"""Each worker's copy of the revocations, kept fresh in the background.

Reading a session stays a cookie decode plus a lookup in memory: ``RevocationWatcher``
loads every revocation once, then a background loop (a greenlet under gevent, a thread
otherwise) asks the store every ``interval`` for what changed since its cursor, so a
revocation made on any worker of any replica is seen here within a second. A store that
can wait for changes (Redis: ``wait_for_revocations``) is waited on instead of polled.

When the store cannot be reached the loop keeps trying; once it answers again, everything
is loaded afresh (nothing missed while it was away is lost). Meanwhile sessions are judged
on the last revocations seen, for at most ``max_staleness`` after the store was last
reached; after that ``stale`` is true and the access decision fails closed (503).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from gateway.state.base import Revocations, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.auth.session import Session
    from gateway.state.base import StateStore

log = logging.getLogger("gateway.state")

INTERVAL = 0.5


class RevocationWatcher:
    def __init__(
        self,
        store: StateStore,
        *,
        max_staleness: float,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_staleness = max_staleness
        self.interval = interval
        self.clock = clock
        self.wall_clock = wall_clock
        self.revoked = Revocations()
        self._cursor: object = None
        # Never reached yet: no revocations are known, so no session may be trusted until
        # they have been loaded once (a worker started while the store is away fails closed).
        self._reached = float("-inf")
        self._failing: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what requests ask -------------------------------------------------------------------

    def revokes(self, session: Session) -> bool:
        return self.revoked.revokes(
            session.sid, (session.user_key, session.unionid), session.issued_at
        )

    @property
    def stale(self) -> bool:
        """The store has not been reached for longer than ``max_staleness``."""
        return self.clock() - self._reached > self.max_staleness

    @property
    def failure(self) -> str | None:
        """Why the store could not be reached the last time it was asked, or None."""
        return self._failing

    # -- keeping up --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the revocations now (if the store answers) and follow them from here on."""
        self.refresh()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)
            self._thread.start()

    def ensure_started(self) -> None:
        if self._thread is None:
            self.start()

    def stop(self) -> None:
        self._stopped.set()

    def refresh(self) -> None:
        """One round: everything after a failure or at the start, else what changed."""
        try:
            if self._cursor is None:
                # Merged, never replaced: nothing is ever un-revoked, so what this worker
                # knew still holds if the store comes back with less (a file replaced, a
                # Redis that lost its data).
                loaded, self._cursor = self.store.revocations()
                self.revoked.merge(loaded)
                self.revoked.prune(self.wall_clock())
            else:
                wait = getattr(self.store, "wait_for_revocations", None)
                changed = (
                    wait(self._cursor, self.interval)
                    if wait is not None
                    else self.store.revocations_since(self._cursor)
                )
                if changed is None:
                    self._cursor = None  # the store cannot tell: reload it all next round
                    return
                found, self._cursor = changed
                if found:
                    self.revoked.merge(found)
        except StoreUnavailable as exc:
            if self._stopped.is_set():
                return  # the worker is exiting and closed the store under us
            if self._failing is None:
                log.warning("state store unreachable: %s", exc)
            self._failing = str(exc)
            self._cursor = None
            return
        if self._failing is not None:
            log.warning("state store reachable again; revocations reloaded")
        self._failing = None
        self._reached = self.clock()

    def _run(self) -> None:
        waits = hasattr(self.store, "wait_for_revocations")
        while not self._stopped.is_set():
            if not waits or self._failing is not None or self._cursor is None:
                self._stopped.wait(self.interval)
            self.refresh()
