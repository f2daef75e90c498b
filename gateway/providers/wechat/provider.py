"""WeChat as an ``IdentityProvider``: the website app's QR login, and the Official Account
flow inside WeChat's own browser.

Both exchange the callback's code for an access token and the openid, then (when the scope
allows and ``wechat.fetch_profile`` is on) read the profile. A snapshot-mode identity
(WeChat's page preview) is refused: it is a placeholder, not a person. WeChat's failures
become the gateway's pages here, in one mapping (``_login_failure``); the client has
already logged their cause.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from gateway.errors import (
    LoginError,
    ProviderBusy,
    ProviderFailed,
    ProviderMisconfigured,
    ProviderTimedOut,
    ProviderUnreachable,
    SnapshotUser,
)
from gateway.providers.base import AuthorizationEnded, CannotRevalidate, EmbeddedLogin, Identity
from gateway.providers.wechat.client import (
    AccessTokenInvalid,
    AuthorizationGone,
    OpenIDInvalid,
    QuotaExceeded,
    SystemBusy,
    WeChatAPIError,
    WeChatError,
    WeChatTimeout,
    WeChatUnavailable,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import Session
    from gateway.providers.wechat.client import WeChatClient

log = logging.getLogger("gateway.login")

PROVIDER = "wechat"
_GONE = (AuthorizationGone, AccessTokenInvalid, OpenIDInvalid)


class WeChatProvider:
    """One WeChat app and the flow a browser takes through it.

    ``key`` ``qr``: the website app (Open Platform), QR code on WeChat's page or embedded in
    the gateway's own; every browser. ``key`` ``oa``: the Official Account, whose
    ``/connect/oauth2/authorize`` signs in silently inside WeChat's browser.
    """

    name = PROVIDER

    def __init__(
        self,
        client: WeChatClient,
        *,
        key: str,
        timeout: float,
        fetch_profile: bool,
        lang: str,
        scope: str | None = None,
        wxlogin_js: str | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.app_id = client.app_id
        self.timeout = timeout
        self.scope = scope
        self.in_app = scope is not None
        self.wxlogin_js = wxlogin_js
        # snsapi_base tokens cannot read the profile (WeChat answers 48001).
        self.reads_profile = fetch_profile and (scope is None or scope == "snsapi_userinfo")
        self.userinfo_lang = "en" if lang == "en" else "zh_CN"

    def serves(self, environ: WSGIEnvironment) -> bool:
        """The Official Account serves WeChat's own browser; the website app serves all."""
        return self.scope is None or "MicroMessenger" in environ.get("HTTP_USER_AGENT", "")

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        if self.scope is not None:
            return self.client.oauth2_authorize_url(redirect_uri, state, self.scope)
        return self.client.qrconnect_url(redirect_uri, state)

    def embedded_login(self, redirect_uri: str, state: str) -> EmbeddedLogin | None:
        if self.scope is not None or self.wxlogin_js is None:
            return None
        return EmbeddedLogin(self.app_id, redirect_uri, state, self.wxlogin_js)

    def sign_in(self, code: str, *, retry: tuple[tuple[str, str], ...]) -> Identity:
        """Code -> tokens -> profile; WeChat trouble becomes a ``LoginError``."""
        # The whole sign-in, both calls and their retries, ends within wechat.timeout.
        deadline = time.monotonic() + self.timeout
        client = self.client
        try:
            token = client.exchange_code(code, deadline=deadline)
            if token.is_snapshotuser:
                # Snapshot mode hands out a virtual identity, never a person to sign in.
                log.info("refused a snapshot-mode identity (openid=%s)", token.openid)
                raise SnapshotUser(actions=retry)
            profile = (
                client.userinfo(
                    token.access_token, token.openid, self.userinfo_lang, deadline=deadline
                )
                if self.reads_profile
                else None
            )
        except WeChatError as exc:
            raise _login_failure(exc, retry) from None
        return Identity(
            provider=PROVIDER,
            subject=token.openid,
            app_id=self.app_id,
            unionid=token.unionid or (profile.unionid if profile else None),
            nickname=profile.nickname if profile else "",
            avatar=profile.avatar if profile else "",
            refresh_token=token.refresh_token,
        )

    def revalidate(self, session: Session) -> Session:
        """Refresh the access token and have ``/sns/auth`` confirm it for the openid."""
        if not session.refresh_token:
            # Sessions from before revalidation was enabled cannot be checked.
            raise AuthorizationEnded("the session has no refresh token")
        # One deadline on the gateway's monotonic clock bounds both calls and their retries.
        deadline = time.monotonic() + self.timeout
        try:
            token = self.client.refresh(session.refresh_token, deadline=deadline)
            self.client.check_auth(token.access_token, session.openid, deadline=deadline)
        except _GONE as exc:
            raise AuthorizationEnded(str(exc)) from None
        except WeChatError as exc:
            raise CannotRevalidate(str(exc)) from None
        # WeChat does not renew refresh tokens today; keep whichever it hands back.
        return dataclasses.replace(
            session, refresh_token=token.refresh_token or session.refresh_token
        )

    def close(self) -> None:
        self.client.close()


def _login_failure(exc: WeChatError, retry: tuple[tuple[str, str], ...]) -> LoginError:
    """The page a WeChat failure during login becomes; the client already logged the cause."""
    if isinstance(exc, WeChatTimeout):
        return ProviderTimedOut(actions=retry)
    if isinstance(exc, QuotaExceeded):
        return ProviderBusy(_detail(exc), retry_after=60, actions=retry)
    if isinstance(exc, SystemBusy):
        return ProviderBusy(_detail(exc), retry_after=5, actions=retry)
    if exc.is_config_error:
        return ProviderMisconfigured(actions=retry)
    if isinstance(exc, WeChatUnavailable):
        return ProviderUnreachable(actions=retry)
    return ProviderFailed(_detail(exc), actions=retry)


def _detail(exc: WeChatError) -> str:
    """A language-neutral detail for the page: the errcode, which support can look up."""
    return f"errcode {exc.errcode}" if isinstance(exc, WeChatAPIError) else ""
