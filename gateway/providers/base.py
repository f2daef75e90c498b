"""The identity provider swap point: what the sign-in flow and revalidation ask of a
service that says who a user is.

An ``IdentityProvider`` answers three questions, the way oauth2-proxy's provider interface
(``GetLoginURL``, ``Redeem``, ``RefreshSession``) does:

- where to send a browser to sign in (``authorize_url``), and whether this provider is the
  one for this browser (``serves``: an in-app browser has its own silent flow);
- how a callback's code becomes an ``Identity`` (``sign_in``);
- whether a session's authorization still stands, and what it holds now (``revalidate``).

Failures are raised as the gateway's own errors (``gateway.errors.LoginError``
subclasses), so the flow and the pages never see a provider's wire errors. Each provider
keeps to its configured timeout for a whole sign-in or check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import Session


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, as the provider vouches for them."""

    provider: str
    #: The provider's stable id for the user within ``app_id`` (WeChat's openid, the openid
    #: of a WeCom non-member; empty for a WeCom member, who has ``userid``).
    subject: str
    app_id: str
    unionid: str | None
    nickname: str
    avatar: str
    #: Kept for revalidation when it is enabled. Secret: never in repr or logs.
    refresh_token: str | None = field(default=None, repr=False)
    #: A WeCom member's userid (``subject`` is then empty: members have no openid).
    userid: str | None = None
    #: A WeCom member's departments in WeCom's order, and those with every one above them.
    departments: tuple[int, ...] = ()
    dept_scope: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbeddedLogin:
    """What the gateway's own login page needs to embed a provider's QR panel."""

    app_id: str
    redirect_uri: str
    state: str
    script_url: str


class AuthorizationEnded(Exception):
    """The provider says the user's authorization for this app no longer stands."""


class CannotRevalidate(Exception):
    """The provider could not be asked (outage, busy, a reply that makes no sense); the
    cause has been logged."""


class IdentityProvider(Protocol):
    """One way of signing in: a service, and the flow a browser takes through it."""

    #: The provider recorded in sessions (``wechat``, ``wecom``).
    name: str
    #: This flow's key in a pending login (``qr``, ``oa``, ``wecom``, ``wecom_app``), so
    #: the callback asks the same.
    key: str
    #: The app the provider's identities belong to (ids differ per app).
    app_id: str

    #: Whether this flow belongs to one client's own browser (WeChat's, WeCom's), which
    #: then takes it without a choice; a web flow serves every browser.
    in_app: bool

    def serves(self, environ: WSGIEnvironment) -> bool:
        """Whether this browser should take this provider's flow (an in-app browser)."""

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Where to send the browser to sign in; it comes back to ``redirect_uri``."""

    def embedded_login(self, redirect_uri: str, state: str) -> EmbeddedLogin | None:
        """The panel for the gateway's own login page, or None if it has none."""

    def sign_in(self, code: str, *, retry: tuple[tuple[str, str], ...]) -> Identity:
        """The identity behind a callback's code; a ``LoginError`` (with ``retry`` as its
        actions) when the provider refuses or fails."""

    def revalidate(self, session: Session) -> Session:
        """Confirm that ``session`` still stands: the session as the provider now sees it
        (a new refresh token, a member's departments today). Raises ``AuthorizationEnded``
        or ``CannotRevalidate``."""

    def close(self) -> None:
        """Release connections."""
