"""Signing in with WeChat: start, callback, logout, and the answer to "who am I".

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

The state is 32 characters of ``[A-Za-z0-9]``, single-use and expiring. Pending logins
live in the browser, in a cookie sealed with the session secret (``<cookie_name>_login``,
``Path=/_gateway/``, or ``/`` under a ``__Host-`` name), so a callback works on any worker
or replica and a callback from a browser that did not start the login finds no state: 400,
and no call to WeChat. After a successful callback the state stays in that cookie marked as
used, so the same browser replaying the callback (back button, reload) lands on its target
again instead of an error, while everyone else still gets 400. The server remembers used
states too (in the ledger, below), so an old copy of the login cookie cannot bring a used
state back with a new code.

Inside WeChat's own browser (``MicroMessenger`` in the User-Agent) and with
``wechat.official_account`` configured, the same steps run through the Official Account's
``/connect/oauth2/authorize`` instead of the QR page; the pending login remembers which
flow it started, so the callback asks the right app. WeChat's in-app browser sometimes
opens the callback twice with one code: ``gateway.ledger`` lets the second request answer
like the first instead of failing on the spent code. With ``login.mode: page`` the QR code
is embedded in the gateway's own page (``gateway.pages.login_page_response``).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
import string
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from gateway.auth.cookies import CookieSpec, request_cookies
from gateway.auth.session import Session, SessionTooLarge
from gateway.errors import (
    GatewayError,
    LoginCancelled,
    LoginStateInvalid,
    NotAllowed,
    SnapshotUser,
    WeChatBusy,
    WeChatFailed,
    WeChatMisconfigured,
    WeChatTimedOut,
    WeChatUnreachable,
)
from gateway.login.ledger import CallbackLedger, Outcome
from gateway.providers.wechat.client import (
    QuotaExceeded,
    SystemBusy,
    WeChatAPIError,
    WeChatError,
    WeChatTimeout,
    WeChatUnavailable,
)
from gateway.web.pages import Branding, json_response, login_page_response, signed_out_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.auth.redirects import RedirectPolicy
    from gateway.auth.session import CookieSessionStore
    from gateway.config import Settings
    from gateway.providers.wechat.client import WeChatClient

log = logging.getLogger("gateway.login")

RESERVED_PREFIX = "/_gateway"
LOGIN_PATH = RESERVED_PREFIX + "/login"
CALLBACK_PATH = RESERVED_PREFIX + "/callback"
LOGOUT_PATH = RESERVED_PREFIX + "/logout"
#: Set in environ by the app when the peer is a configured trusted front proxy.
TRUSTED_PROXY_KEY = "gateway.trusted_proxy"

STATE_PURPOSE = b"login-state"
_STATE_ALPHABET = string.ascii_letters + string.digits
_STATE_LENGTH = 32
_MAX_PENDING = 4  # logins started in other tabs stay valid


def _new_state() -> str:
    return "".join(secrets.choice(_STATE_ALPHABET) for _ in range(_STATE_LENGTH))


def _valid_state(state: str) -> bool:
    return 0 < len(state) <= 128 and all(c in _STATE_ALPHABET for c in state)


class _Pending:
    """One login started in this browser: state, target, expiry, used, and which flow."""

    __slots__ = ("expires_at", "flow", "state", "target", "used")

    def __init__(self, state: str, target: str, expires_at: int, used: bool, flow: str) -> None:
        self.state = state
        self.target = target
        self.expires_at = expires_at
        self.used = used
        self.flow = flow

    def dump(self) -> list[object]:
        return [self.state, self.target, self.expires_at, int(self.used), self.flow]


class LoginFlow:
    """The ``/_gateway/`` endpoints that sign a browser in and out.

    ``clients`` maps a flow to the WeChat app that serves it: ``"qr"`` (the website app,
    always) and ``"oa"`` (the Official Account, for WeChat's own browser, when configured).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: CookieSessionStore,
        clients: Mapping[str, WeChatClient],
        redirects: RedirectPolicy,
        may_enter: Callable[[Session, str], bool],
        ledger: CallbackLedger,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_url = settings.public_url
        self.callback_url = settings.public_url + CALLBACK_PATH
        self.sessions = sessions
        self.clients = clients
        self.redirects = redirects
        self.may_enter = may_enter
        self.public_scheme, _, self.public_host = settings.public_url.partition("://")
        self.upstream_hosts = frozenset(u.host for u in settings.upstreams if u.host)
        self.ledger = ledger
        self.clock = clock
        self.max_age = settings.session.max_age
        self.keep_refresh_token = settings.session.revalidate is not None
        self.timeout = settings.wechat.timeout
        self.fetch_profile = settings.wechat.fetch_profile
        oa = settings.wechat.official_account
        self.oa_scope = oa.scope if oa is not None else None
        self.page_mode = settings.login.mode == "page"
        self.branding = Branding.from_settings(settings)
        self.wxlogin_js = settings.login.wxlogin_js
        self.state_ttl = settings.login.state_ttl
        self.userinfo_lang = "en" if settings.wechat.lang == "en" else "zh_CN"
        # The name keeps the session cookie's prefix; under ``__Host-`` the spec widens the
        # path to ``/`` (the proxy strips this cookie from what the upstream sees).
        self.state_cookie = CookieSpec(
            f"{settings.session.cookie_name}_login",
            path=RESERVED_PREFIX + "/",
            secure=settings.session.secure,
        )

    # -- helpers -------------------------------------------------------------------------

    def login_url(self, target: str = "/") -> str:
        if target == "/":
            return self.public_url + LOGIN_PATH
        return f"{self.public_url}{LOGIN_PATH}?rd={quote(target, safe='')}"

    def _retry(self, target: str = "/") -> tuple[tuple[str, str], ...]:
        return (("Try again", self.login_url(target)),)

    def _absolute(self, target: str) -> str:
        return self.public_url + target if target.startswith("/") else target

    def _read_pending(self, environ: WSGIEnvironment) -> list[_Pending]:
        now = self.clock()
        for value in request_cookies(environ, self.state_cookie.name):
            payload = self.sessions.codec.unseal(value, purpose=STATE_PURPOSE)
            if payload is None:
                continue
            try:
                entries = json.loads(payload)
                return [
                    _Pending(str(state), str(target), int(expires), bool(used), str(flow))
                    for state, target, expires, used, flow in entries
                    if int(expires) > now and flow in self.clients
                ]
            except (ValueError, TypeError):
                continue
        return []

    def _pending_cookie(self, pending: list[_Pending]) -> tuple[str, str]:
        if not pending:
            return self.state_cookie.clear()
        payload = json.dumps(
            [entry.dump() for entry in pending[:_MAX_PENDING]], separators=(",", ":")
        ).encode()
        ttl = max(max(p.expires_at for p in pending) - int(self.clock()), 1)
        value = self.sessions.codec.seal(payload, purpose=STATE_PURPOSE, ttl=ttl)
        return self.state_cookie.set(value, ttl)

    def _flow_for(self, environ: WSGIEnvironment) -> str:
        """WeChat's own browser signs in through the Official Account when there is one."""
        if "oa" in self.clients and "MicroMessenger" in environ.get("HTTP_USER_AGENT", ""):
            return "oa"
        return "qr"

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

    def challenge(
        self, environ: WSGIEnvironment, start_response: StartResponse, target: str, *, api: bool
    ) -> Iterable[bytes]:
        """No session: browsers are sent to log in, API calls get 401 with ``login_url``."""
        login_url = self.login_url(self.redirects.safe_target(target))
        if api:
            return json_response(
                environ,
                start_response,
                "401 Unauthorized",
                {
                    "error": "unauthorized",
                    "message": "Sign in with WeChat first.",
                    "login_url": login_url,
                },
                [("WWW-Authenticate", 'WeChat realm="wechat-gateway"')],
            )
        return _redirect(start_response, login_url)

    # -- the endpoints -------------------------------------------------------------------

    def start(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/login?rd=TARGET``: remember the target, send the browser to WeChat."""
        rd = _query(environ).get("rd")
        if not rd:
            uri = original_uri(environ)
            rd = self.return_to(uri, forwarded_host(environ)) if uri else None
        target = self.redirects.safe_target(rd) if rd else "/"
        flow = self._flow_for(environ)
        state = _new_state()
        # Rounded up: whole seconds are stored, and a login must live at least state_ttl.
        expires_at = math.ceil(self.clock() + self.state_ttl)
        pending = [_Pending(state, target, expires_at, False, flow)]
        pending += [p for p in self._read_pending(environ) if not p.used][: _MAX_PENDING - 1]
        state_cookie = self._pending_cookie(pending)
        client = self.clients[flow]
        if flow == "oa":
            assert self.oa_scope is not None
            location = client.oauth2_authorize_url(self.callback_url, state, self.oa_scope)
            return _redirect(start_response, location, state_cookie)
        location = client.qrconnect_url(self.callback_url, state)
        if self.page_mode:
            return login_page_response(
                environ,
                start_response,
                appid=client.app_id,
                redirect_uri=self.callback_url,
                state=state,
                script_url=self.wxlogin_js,
                fallback_url=location,
                extra_headers=(state_cookie,),
                branding=self.branding,
            )
        return _redirect(start_response, location, state_cookie)

    def callback(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``GET /_gateway/callback?code=&state=``: check the state, then ask WeChat who it is."""
        query = _query(environ)
        state = query.get("state", "")
        if not _valid_state(state):
            raise LoginStateInvalid(actions=self._retry())
        pending = self._read_pending(environ)
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
            raise LoginCancelled(
                actions=self._retry(entry.target),
                extra_headers=(self._pending_cookie(remaining),),
            )
        entry.used = True
        state_cookie = self._pending_cookie([entry, *remaining])
        if not self.ledger.claim(code):
            return self._duplicate(start_response, code, entry, state_cookie)
        if not self.ledger.use_state(state, entry.expires_at):
            # Used before, with another code: an old copy of the login cookie replayed.
            self.ledger.record(code, state, Outcome(ok=False))
            raise LoginStateInvalid(actions=self._retry())
        try:
            session = self._sign_in(entry.flow, code, entry.target)
            session_cookie = self.sessions.save(session, self.clock())
        except SessionTooLarge:
            self.ledger.record(code, state, Outcome(ok=False))
            raise WeChatFailed(actions=self._retry(entry.target)) from None
        except GatewayError:
            self.ledger.record(code, state, Outcome(ok=False))
            raise
        target = self._absolute(entry.target)
        self.ledger.record(
            code, state, Outcome(ok=True, target=target, set_cookie=session_cookie[1])
        )
        log.info("signed in openid=%s app_id=%s", session.openid, session.app_id)
        return _redirect(start_response, target, state_cookie, session_cookie)

    def _duplicate(
        self,
        start_response: StartResponse,
        code: str,
        entry: _Pending,
        state_cookie: tuple[str, str],
    ) -> Iterable[bytes]:
        """A second callback with a code already being exchanged: answer like the first."""
        outcome = self.ledger.wait(code, entry.state, self.timeout + 1)
        if outcome is None or not outcome.ok:
            raise WeChatFailed(actions=self._retry(entry.target))
        log.info("answered a duplicate callback like the first one")
        return _redirect(
            start_response, outcome.target, state_cookie, ("Set-Cookie", outcome.set_cookie)
        )

    def _sign_in(self, flow: str, code: str, target: str) -> Session:
        """Code -> tokens -> profile -> session; WeChat trouble becomes a LoginError."""
        client = self.clients[flow]
        retry = self._retry(target)
        # The whole sign-in, both calls and their retries, ends within wechat.timeout.
        deadline = time.monotonic() + self.timeout
        try:
            token = client.exchange_code(code, deadline=deadline)
            if token.is_snapshotuser:
                # Snapshot mode hands out a virtual identity, never a person to sign in.
                log.info("refused a snapshot-mode identity (openid=%s)", token.openid)
                raise SnapshotUser(actions=retry)
            # snsapi_base tokens cannot read the profile (WeChat answers 48001).
            wants_profile = self.fetch_profile and (
                flow == "qr" or self.oa_scope == "snsapi_userinfo"
            )
            profile = (
                client.userinfo(
                    token.access_token, token.openid, self.userinfo_lang, deadline=deadline
                )
                if wants_profile
                else None
            )
        except WeChatError as exc:
            raise _login_failure(exc, retry) from None
        now = int(self.clock())
        session = Session(
            openid=token.openid,
            app_id=client.app_id,
            unionid=token.unionid or (profile.unionid if profile else None),
            nickname=profile.nickname if profile else "",
            avatar=profile.avatar if profile else "",
            issued_at=now,
            expires_at=now + self.max_age,
            refresh_token=token.refresh_token if self.keep_refresh_token else None,
            validated_at=now if self.keep_refresh_token else None,
        )
        if not self.may_enter(session, target):
            log.info("refused openid=%s: not on the allow list", session.openid)
            raise NotAllowed(
                f"openid: {session.openid}",
                actions=(("Sign in with another account", self.login_url(target)),),
            )
        return session

    def logout(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``GET|POST /_gateway/logout?rd=TARGET``: clear the session; 302 to a safe TARGET."""
        rd = _query(environ).get("rd")
        clear = self.sessions.clear()
        if rd and self.redirects.is_safe(rd):
            return _redirect(start_response, self._absolute(rd), clear)
        return signed_out_response(
            environ,
            start_response,
            login_url=self.login_url(),
            extra_headers=(clear,),
            branding=self.branding,
        )


def forwarded_host(environ: WSGIEnvironment) -> str | None:
    """The host the browser asked for: a trusted front proxy's ``X-Forwarded-Host``, else
    ``Host``."""
    if environ.get(TRUSTED_PROXY_KEY) and environ.get("HTTP_X_FORWARDED_HOST"):
        return str(environ["HTTP_X_FORWARDED_HOST"])
    host = environ.get("HTTP_HOST")
    return str(host) if host else None


def original_uri(environ: WSGIEnvironment) -> str | None:
    """The URI a trusted front proxy says the browser asked for (nginx ``auth_request``
    sends ``X-Original-URI``, Traefik ``X-Forwarded-Uri``); the app marks trust in environ."""
    if not environ.get(TRUSTED_PROXY_KEY):
        return None
    uri = environ.get("HTTP_X_ORIGINAL_URI") or environ.get("HTTP_X_FORWARDED_URI")
    if not uri or uri.startswith(RESERVED_PREFIX + "/"):
        return None
    return str(uri)


def _login_failure(exc: WeChatError, retry: tuple[tuple[str, str], ...]) -> GatewayError:
    """The page a WeChat failure during login becomes; the client already logged the cause."""
    if isinstance(exc, WeChatTimeout):
        return WeChatTimedOut(actions=retry)
    if isinstance(exc, QuotaExceeded):
        return WeChatBusy(_detail(exc), retry_after=60, actions=retry)
    if isinstance(exc, SystemBusy):
        return WeChatBusy(_detail(exc), retry_after=5, actions=retry)
    if exc.is_config_error:
        return WeChatMisconfigured(actions=retry)
    if isinstance(exc, WeChatUnavailable):
        return WeChatUnreachable(actions=retry)
    return WeChatFailed(_detail(exc), actions=retry)


def _detail(exc: WeChatError) -> str:
    """A language-neutral detail for the page: the errcode, which support can look up."""
    return f"errcode {exc.errcode}" if isinstance(exc, WeChatAPIError) else ""


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
