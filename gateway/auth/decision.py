"""The access decision: who is asking and whether they may, in one place.

Proxied requests and forward-auth checks are decided here alike: the request's session
(revalidated with its provider when due), the route's own allow list or the global one,
public upstreams and paths, CORS preflights. The sign-in flow asks the same component
whether a user who is signing in may use the target they came for.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.context import RESERVED_PREFIX
from gateway.errors import BadRequest
from gateway.http.paths import policy_path
from gateway.providers.base import AuthorizationEnded
from gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.access import AccessPolicy
    from gateway.auth.session import Session
    from gateway.auth.store import SessionStore
    from gateway.context import RequestContext
    from gateway.login.revalidation import Revalidator
    from gateway.proxy.router import Route, Router

# What makes a path read differently once resolved: escapes, dots, backslashes, ';', '//'.
_UNUSUAL_PATH = re.compile(r"[%\\;]|/\.|//")


class Verdict(enum.Enum):
    """What to do with a request."""

    #: Forward as this user, with the identity headers.
    IDENTITY = "identity"
    #: Forward without identity: a public upstream, path or preflight.
    ANONYMOUS = "anonymous"
    #: Signed in, but not allowed here: 403.
    FORBIDDEN = "forbidden"
    #: No session: sign in (a redirect for people, the 401 for API clients).
    CHALLENGE = "challenge"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    session: Session | None = None
    #: A ``Set-Cookie`` the answer must carry: a re-issued or cleared session.
    set_cookie: tuple[str, str] | None = None


class AccessDecision:
    """Routes a request and decides on it; the one place access is decided."""

    def __init__(
        self,
        policy: AccessPolicy,
        router: Router,
        sessions: SessionStore,
        revalidator: Revalidator | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.router = router
        self.sessions = sessions
        self.revalidator = revalidator
        self.clock = clock

    def route(self, raw_path: str, host: str | None) -> Route | None:
        """The route for a path; 400 if another reading of the path picks another one.

        Rules (allow lists, public upstreams) belong to the route, so ``/pub/../admin``
        must not be judged by ``/pub``'s rules while a shared backend serves ``/admin``.
        """
        route = self.router.choose(raw_path, host)
        if _UNUSUAL_PATH.search(raw_path):
            try:
                resolved = policy_path(raw_path)
            except BadRequest:
                return route  # unreadable: public-path checks refuse it where it matters
            if self.router.choose(resolved, host) is not route or (
                resolved == RESERVED_PREFIX or resolved.startswith(RESERVED_PREFIX + "/")
            ):
                # Another route's, or the gateway's own /_gateway/ once resolved.
                raise BadRequest("the path is ambiguous: it reads differently once resolved")
        return route

    def decide(
        self, ctx: RequestContext, route: Route | None, method: str, raw_path: str
    ) -> Decision:
        """Who is asking and whether they may."""
        try:
            session, set_cookie = self.session(ctx.environ)
        except StoreUnavailable:
            # Revocations too old to trust: a session is refused, a public path is not.
            if self._is_public(ctx, route, method, raw_path):
                return Decision(Verdict.ANONYMOUS)
            raise
        allow = route.allow if route is not None else None
        if session is not None and self.policy.allows(session, allow):
            return Decision(Verdict.IDENTITY, session, set_cookie)
        if self._is_public(ctx, route, method, raw_path):
            return Decision(Verdict.ANONYMOUS, None, set_cookie)
        if self.policy.is_api_path(raw_path):
            ctx.api = True
        if session is not None:
            # A user refused everywhere keeps no session; one refused only by this route's
            # own list keeps it for the others.
            if not self._allowed_anywhere(session):
                set_cookie = self.sessions.clear(ctx.environ)
            return Decision(Verdict.FORBIDDEN, session, set_cookie)
        return Decision(Verdict.CHALLENGE, None, set_cookie)

    def _is_public(
        self, ctx: RequestContext, route: Route | None, method: str, raw_path: str
    ) -> bool:
        return (
            (route is not None and route.public)
            or self.policy.is_preflight(ctx.environ)
            or self.policy.is_public(method, raw_path)
        )

    def session(self, environ: WSGIEnvironment) -> tuple[Session | None, tuple[str, str] | None]:
        """The request's session, revalidated with its provider when due, and any cookie
        to set (a session re-issued, or one that ended)."""
        found = self.sessions.load(environ)
        if found is None:
            return None, None
        session, reissue = found
        if self.revalidator is not None and self.revalidator.due(session, self.clock()):
            try:
                fresh = self.revalidator.revalidate(session)
            except AuthorizationEnded:
                return None, self.sessions.clear(environ)
            if fresh is not session:
                session, reissue = fresh, True
        return session, self.sessions.save(environ, session) if reissue else None

    def may_enter(self, session: Session, target: str) -> bool:
        """Whether a signing-in user may use the target they came for (its route's rules)."""
        parts = urlsplit(target)
        route = self.router.choose(parts.path or "/", parts.netloc or None)
        return self.policy.allows(session, route.allow if route is not None else None)

    def _allowed_anywhere(self, session: Session) -> bool:
        return self.policy.allows(session) or any(
            route.allow is not None and route.allow.allows(session) for route in self.router.routes
        )
