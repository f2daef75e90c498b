"""The session store swap point: where a request's session is found, written and ended.

``SessionStore`` is what the pipeline and the sign-in flow speak to. Today's store keeps
the whole session in an encrypted cookie (``gateway.auth.session.CookieSessionStore``);
a store with server-side records (an index to revoke from, a Redis hash) implements the
same three calls and is handed the request for each, so it can find and delete its own
records, plus ``forget``, which drops what a worker remembers of opened sessions (a
revocation must reach every worker's cache).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import Session


class SessionStore(Protocol):
    """Find, write and end the session of a request."""

    def load(self, environ: WSGIEnvironment) -> tuple[Session, bool] | None:
        """The request's session and whether to write it again (re-sealed under the current
        key), or None: no session, or one that is invalid, foreign, expired or revoked."""

    def save(
        self, environ: WSGIEnvironment, session: Session, *, new: bool = False
    ) -> tuple[str, str]:
        """Record ``session`` for this browser (``new``: a sign-in, not a re-issue); the
        ``Set-Cookie`` header that carries it."""

    def clear(self, environ: WSGIEnvironment, *, everywhere: bool = False) -> tuple[str, str]:
        """End this browser's session (``everywhere``: every session of its user); the
        ``Set-Cookie`` header that removes it from this browser."""

    def forget(self, predicate: Callable[[Session], bool] | None = None) -> None:
        """Drop this worker's memory of opened sessions (those matching ``predicate``, or
        all), so that the next request with one is read, and judged, again."""
