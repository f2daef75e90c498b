"""Signing in: start, callback and logout, through whichever identity provider applies.

The flow (website QR login, OAuth 2.0 authorization code)::

    browser                      gateway                               WeChat
    GET /app/page  ──────────►   no session: 302 /_gateway/login?rd=/app/page
    GET /_gateway/login  ────►   new state, sealed into a short-lived cookie
                                 bound to this browser; 302 ─────────► qrconnect page
                                                                       user scans, confirms
    GET /_gateway/callback?code&state ◄──────────────────────────────── 302
                                 1. state checked against the cookie (before any call)
                                 2. code -> access_token ───────────► /sns/oauth2/access_token
                                 3. profile ─────────────────────────► /sns/userinfo
                                 4. session cookie set; 302 /app/page

The flow speaks only to ``IdentityProvider`` (``gateway.providers``) and ``SessionStore``
(``gateway.auth.store``); WeChat's wire is the WeChat provider's business.

The state is 32 characters of ``[A-Za-z0-9]``, single-use and expiring. Pending logins
live in the browser (``gateway.login.state``), in a cookie sealed with the session secret
(``<cookie_name>_login``, ``Path=/_gateway/``, or ``/`` under a ``__Host-`` name), so a
callback works on any worker or replica and a callback from a browser that did not start
the login finds no state: 400, and no call to the provider. After a successful callback
the state stays in that cookie marked as used, so the same browser replaying the callback
(back button, reload) lands on its target again instead of an error, while everyone else
still gets 400. The server remembers used states too (in the ledger, below), so an old
copy of the login cookie cannot bring a used state back with a new code.

Inside WeChat's own browser (``MicroMessenger`` in the User-Agent) and with
``wechat.official_account`` configured, the same steps run through the Official Account's
``/connect/oauth2/authorize`` instead of the QR page: the first provider that ``serves``
the browser is taken, and the pending login remembers which, so the callback asks the
same one. WeChat's in-app browser sometimes
opens the callback twice with one code: ``gateway.ledger`` lets the second request answer
like the first instead of failing on the spent code. With ``login.mode: page`` the QR code
is embedded in the gateway's own page (``gateway.web.pages.login_page_response``).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from gateway.audit import Audit, reason_of
from gateway.auth.session import Session, SessionTooLarge
from gateway.context import RESERVED_PREFIX
from gateway.errors import (
    GatewayError,
    LoginCancelled,
    LoginStateInvalid,
    NotAllowed,
    ProviderFailed,
    SignInRequired,
    WeComCancelled,
    WeComNotAllowed,
)
from gateway.login.ledger import CallbackLedger, Outcome
from gateway.login.state import LoginStateCookie, PendingLogin, new_state, valid_state
from gateway.providers.wecom.provider import WeComProvider
from gateway.state.base import StoreUnavailable
from gateway.web.i18n import negotiate_lang
from gateway.web.pages import (
    Branding,
    LoginChoice,
    choice_page_response,
    login_page_response,
    signed_out_response,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.auth.decision import Decision
    from gateway.auth.redirects import RedirectPolicy
    from gateway.auth.store import SessionStore
    from gateway.context import RequestContext
    from gateway.providers.base import IdentityProvider

log = logging.getLogger("gateway.login")

LOGIN_PATH = RESERVED_PREFIX + "/login"
CALLBACK_PATH = RESERVED_PREFIX + "/callback"
LOGOUT_PATH = RESERVED_PREFIX + "/logout"
#: The challenge every 401 carries (API calls, forward-auth, ``/_gateway/userinfo``).
WWW_AUTHENTICATE = ("WWW-Authenticate", 'WeChat realm="wechat-gateway"')


class LoginFlow:
    """The ``/_gateway/`` endpoints that sign a browser in and out.

    ``providers`` in order of preference: the first that ``serves`` a browser signs it in
    (an in-app flow before the one every browser can take). ``may_enter`` is the access
    decision's answer to "may this user use the target they came for".
    """

    def __init__(
        self,
        *,
        public_url: str,
        providers: Sequence[IdentityProvider],
        sessions: SessionStore,
        login_state: LoginStateCookie,
        redirects: RedirectPolicy,
        may_enter: Callable[[Session, str], bool],
        ledger: CallbackLedger,
        max_age: int,
        keep_refresh_token: bool,
        state_ttl: float,
        exchange_timeout: float,
        page_mode: bool,
        branding: Branding,
        upstream_hosts: frozenset[str] = frozenset(),
        audit: Audit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_url = public_url
        self.audit = audit if audit is not None else Audit()
        self.callback_url = public_url + CALLBACK_PATH
        self.providers = {provider.key: provider for provider in providers}
        self._preference = tuple(providers)
        #: In-app flows, taken without a choice inside their client's browser.
        self._in_app = tuple(p for p in providers if p.in_app)
        #: The flows every browser can take: one is taken, several are offered on a page.
        self._web = tuple(p for p in providers if not p.in_app)
        self.sessions = sessions
        self.login_state = login_state
        self.redirects = redirects
        self.may_enter = may_enter
        self.ledger = ledger
        self.max_age = max_age
        self.keep_refresh_token = keep_refresh_token
        self.state_ttl = state_ttl
        self.exchange_timeout = exchange_timeout
        self.page_mode = page_mode
        self.branding = branding
        self.public_scheme, _, self.public_host = public_url.partition("://")
        self.upstream_hosts = upstream_hosts
        self.clock = clock

    # -- helpers -------------------------------------------------------------------------

    def login_url(self, target: str = "/") -> str:
        if target == "/":
            return self.public_url + LOGIN_PATH
        return f"{self.public_url}{LOGIN_PATH}?rd={quote(target, safe='')}"

    def _retry(self, target: str = "/") -> tuple[tuple[str, str], ...]:
        return (("Try again", self.login_url(target)),)

    def _absolute(self, target: str) -> str:
        return self.public_url + target if target.startswith("/") else target

    def return_to(self, target: str, host: str | None) -> str:
        """Where to come back after login: the path, or an absolute URL on another
        configured host (it must still pass ``redirect_domains`` to be honoured)."""
        if not host:
            return target
        host = host.lower()
        if host != self.public_host and (
            host in self.upstream_hosts or host.rsplit(":", 1)[0] in self.upstream_hosts
        ):
            return f"{self.public_scheme}://{host}{target}"
        return target

    # -- requests without a session ---------------------------------------------------------

    def sign_in_required(
        self, target: str = "/", extra_headers: Iterable[tuple[str, str]] = ()
    ) -> SignInRequired:
        """The one 401: JSON ``{error, message, login_url}`` for API clients, a page with a
        sign-in link for people, ``WWW-Authenticate`` on both."""
        login_url = self.login_url(self.redirects.safe_target(target))
        return SignInRequired(
            actions=(("Sign in", login_url),),
            extra_headers=(WWW_AUTHENTICATE, *extra_headers),
        )

    def challenge(
        self, ctx: RequestContext, start_response: StartResponse, target: str
    ) -> Iterable[bytes]:
        """No session: browsers are sent to log in, API calls get the 401."""
        if ctx.api:
            raise self.sign_in_required(target)
        return _redirect(start_response, self.login_url(self.redirects.safe_target(target)))

    # -- the endpoints -------------------------------------------------------------------

    def start(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/login?rd=TARGET``: remember the target, send the browser to sign
        in with the provider that serves it."""
        environ = ctx.environ
        self.ledger.ready()  # a sign-in that could not complete is not started
        rd = _query(environ).get("rd")
        if not rd:
            uri = ctx.original_uri()
            rd = self.return_to(uri, ctx.forwarded_host()) if uri else None
        target = self.redirects.safe_target(rd) if rd else "/"
        in_app = next((p for p in self._in_app if p.serves(environ)), None)
        if in_app is None and len(self._web) > 1:
            return self._choice(ctx, start_response, target, self._web)
        provider = in_app or self._web[0]
        state, state_cookie = self._pending(environ, target, provider)
        location = provider.authorize_url(self.callback_url, state)
        if in_app is None and self.page_mode:
            embedded = provider.embedded_login(self.callback_url, state)
            if embedded is not None:
                return login_page_response(
                    environ,
                    start_response,
                    appid=embedded.app_id,
                    redirect_uri=embedded.redirect_uri,
                    state=embedded.state,
                    script_url=embedded.script_url,
                    fallback_url=location,
                    extra_headers=(state_cookie,),
                    branding=self.branding,
                )
            if isinstance(provider, WeComProvider):
                return self._choice(ctx, start_response, target, (provider,))
        return _redirect(start_response, location, state_cookie)

    def _pending(
        self, environ: WSGIEnvironment, target: str, provider: IdentityProvider
    ) -> tuple[str, tuple[str, str]]:
        """A new login with ``provider`` remembered in the browser's login cookie: its state
        and the cookie to set."""
        state = new_state()
        # Rounded up: whole seconds are stored, and a login must live at least state_ttl.
        expires_at = math.ceil(self.clock() + self.state_ttl)
        new = PendingLogin(state, target, expires_at, False, provider.key)
        pending = self.login_state.started(self.login_state.read(environ), new)
        return state, self.login_state.write(pending)

    def _choice(
        self,
        ctx: RequestContext,
        start_response: StartResponse,
        target: str,
        providers: Sequence[IdentityProvider],
    ) -> Iterable[bytes]:
        """The gateway's own page offering each web login in ``providers``, each with its
        own state (the callback knows from it which provider to ask)."""
        environ = ctx.environ
        lang = negotiate_lang(environ, self.branding.default_lang)
        pending = self.login_state.read(environ)
        expires_at = math.ceil(self.clock() + self.state_ttl)
        choices = []
        for provider in providers:
            state = new_state()
            pending = self.login_state.started(
                pending, PendingLogin(state, target, expires_at, False, provider.key)
            )
            link = provider.authorize_url(self.callback_url, state)
            if isinstance(provider, WeComProvider):
                frame = provider.panel_url(self.callback_url, state, lang=lang)
                choices.append(LoginChoice("wecom", link, frame_url=frame))
                continue
            embedded = provider.embedded_login(self.callback_url, state)
            choices.append(
                LoginChoice(
                    provider.name,
                    link,
                    script_url=embedded.script_url if embedded else "",
                    appid=provider.app_id,
                    redirect_uri=self.callback_url,
                    state=state,
                )
            )
        return choice_page_response(
            environ,
            start_response,
            choices=choices,
            callback_url=self.callback_url,
            extra_headers=(self.login_state.write(pending),),
            branding=self.branding,
        )

    def callback(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/callback?code=&state=``: check the state, then ask the provider
        who it is. Each outcome is a ``signin`` audit event."""
        try:
            return self._callback(ctx, start_response)
        except (GatewayError, StoreUnavailable) as error:
            subject = getattr(error, "subject", None) or ""
            member = subject.startswith("wecom:")
            self.audit(
                "signin",
                ctx.environ,
                outcome="failed",
                reason=reason_of(error),
                openid=None if member else subject or None,
                userid=subject[6:] if member else None,
                detail=getattr(error, "detail", None) or None,
            )
            raise

    def _callback(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        environ = ctx.environ
        query = _query(environ)
        state = query.get("state", "")
        if not valid_state(state):
            raise LoginStateInvalid(actions=self._retry())
        pending = self.login_state.read(environ)
        entry = next((p for p in pending if hmac.compare_digest(p.state, state)), None)
        if entry is None:
            raise LoginStateInvalid(actions=self._retry())
        if entry.used:
            if self.sessions.load(environ) is not None:
                return _redirect(start_response, self._absolute(entry.target))
            raise LoginStateInvalid(actions=self._retry())
        code = query.get("code")
        remaining = [p for p in pending if p is not entry]
        if not code:
            self.ledger.use_state(state, entry.expires_at)
            provider = self.providers.get(entry.flow)
            cancelled = (
                WeComCancelled
                if provider is not None and provider.name == "wecom"
                else LoginCancelled
            )
            raise cancelled(
                actions=self._retry(entry.target),
                extra_headers=(self.login_state.write(remaining),),
            )
        entry.used = True
        state_cookie = self.login_state.write([entry, *remaining])
        if not self.ledger.claim(code):
            return self._duplicate(start_response, code, entry, state_cookie)
        if not self.ledger.use_state(state, entry.expires_at):
            # Used before, with another code: an old copy of the login cookie replayed.
            self.ledger.record(code, state, Outcome(ok=False))
            raise LoginStateInvalid(actions=self._retry())
        try:
            session = self._sign_in(entry.flow, code, entry.target)
            session_cookie = self.sessions.save(environ, session, new=True)
        except SessionTooLarge:
            self.ledger.record(code, state, Outcome(ok=False))
            raise ProviderFailed(actions=self._retry(entry.target)) from None
        except GatewayError:
            self.ledger.record(code, state, Outcome(ok=False))
            raise
        target = self._absolute(entry.target)
        self.ledger.record(
            code, state, Outcome(ok=True, target=target, set_cookie=session_cookie[1])
        )
        self.audit("signin", environ, session=session, app_id=session.app_id)
        return _redirect(start_response, target, state_cookie, session_cookie)

    def _duplicate(
        self,
        start_response: StartResponse,
        code: str,
        entry: PendingLogin,
        state_cookie: tuple[str, str],
    ) -> Iterable[bytes]:
        """A second callback with a code already being exchanged: answer like the first."""
        outcome = self.ledger.wait(code, entry.state, self.exchange_timeout + 1)
        if outcome is None or not outcome.ok:
            raise ProviderFailed(actions=self._retry(entry.target))
        log.info("answered a duplicate callback like the first one")
        return _redirect(
            start_response, outcome.target, state_cookie, ("Set-Cookie", outcome.set_cookie)
        )

    def _sign_in(self, flow: str, code: str, target: str) -> Session:
        """Code -> identity (the provider's business) -> session, if the user may enter."""
        identity = self.providers[flow].sign_in(code, retry=self._retry(target))
        now = int(self.clock())
        session = Session(
            openid=identity.subject,
            app_id=identity.app_id,
            unionid=identity.unionid,
            nickname=identity.nickname,
            avatar=identity.avatar,
            issued_at=now,
            expires_at=now + self.max_age,
            refresh_token=identity.refresh_token if self.keep_refresh_token else None,
            validated_at=now if self.keep_refresh_token else None,
            provider=identity.provider,
            sid=secrets.token_urlsafe(12),
            userid=identity.userid,
            departments=identity.departments,
            dept_scope=identity.dept_scope,
        )
        if not self.may_enter(session, target):
            refused = _not_allowed(session)(
                _shown(session),
                actions=(("Sign in with another account", self.login_url(target)),),
            )
            refused.subject = session.subject
            raise refused
        return session

    def forbidden(self, decision: Decision) -> NotAllowed:
        """The 403 for a signed-in user the route does not allow, carrying any cookie the
        decision sets, with ways out: sign out, or sign in as someone else."""
        assert decision.session is not None
        return _not_allowed(decision.session)(
            _shown(decision.session),
            actions=(
                ("Sign out", self.public_url + LOGOUT_PATH),
                ("Sign in with another account", self.login_url()),
            ),
            extra_headers=(decision.set_cookie,) if decision.set_cookie else (),
        )

    def logout(self, ctx: RequestContext, start_response: StartResponse) -> Iterable[bytes]:
        """``GET|POST /_gateway/logout?rd=TARGET[&everywhere=1]``: end this browser's session
        (revoked everywhere, so a copy of the cookie no longer works), or with
        ``everywhere`` every session of its user; 302 to a safe TARGET."""
        environ = ctx.environ
        query = _query(environ)
        rd = query.get("rd")
        everywhere = query.get("everywhere") in _YES
        found = self.sessions.load(environ)
        clear = self.sessions.clear(environ, everywhere=everywhere)
        self.audit(
            "signout",
            environ,
            session=found[0] if found is not None else None,
            everywhere=everywhere,
            reason=None if found is not None else "no_session",
        )
        if rd and self.redirects.is_safe(rd):
            return _redirect(start_response, self._absolute(rd), clear)
        return signed_out_response(
            environ,
            start_response,
            login_url=self.login_url(),
            extra_headers=(clear,),
            branding=self.branding,
        )

    def close(self) -> None:
        for provider in self._preference:
            provider.close()


_YES = frozenset({"1", "true", "yes", "on"})


def _not_allowed(session: Session) -> type[NotAllowed]:
    """The refusal's page, worded for the provider the user signed in with."""
    return WeComNotAllowed if session.provider == "wecom" else NotAllowed


def _shown(session: Session) -> str:
    """Who was refused, as the 403 page names them (so they can ask to be let in)."""
    if session.userid:
        return f"userid: {session.userid}"
    return f"openid: {session.openid}"


def _query(environ: WSGIEnvironment) -> dict[str, str]:
    """The query parameters, first value of each."""
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def _redirect(
    start_response: StartResponse, location: str, *extra: tuple[str, str]
) -> Iterable[bytes]:
    start_response(
        "302 Found",
        [("Location", location), ("Cache-Control", "no-store"), ("Content-Length", "0"), *extra],
    )
    return []
