"""The WeChat OAuth API client and its error classes.

``WeChatClient`` builds the two authorize URLs a browser is sent to and makes the four
``/sns/`` API calls the gateway needs (code exchange, token refresh, token check, profile).
It is built from plain values, holds one pooled ``requests.Session`` and is safe to share
between the threads of one worker. It does not store tokens: the caller owns them.

It is not a general WeChat SDK: Official Account messaging, payments and the app-level
``cgi-bin`` access token are out of scope.

The wire is read the way WeChat actually writes it (see ``docs`` and the protocol
reference): the declared ``text/plain`` content type is ignored, the body is decoded as
UTF-8 and parsed with ``strict=False`` because nicknames carry raw control characters.

Every failure is one of these exceptions; the tree is the map from failure to behaviour::

    WeChatError                       anything this module raises
    ├── WeChatTransportError          no usable reply arrived          (transient)
    │   ├── WeChatTimeout             the time budget ran out
    │   └── WeChatUnavailable         refused, reset, DNS or TLS failure
    ├── WeChatProtocolError           HTTP status not 200, a body that is not a JSON object,
    │                                 a required field missing or of the wrong type
    └── WeChatAPIError                WeChat answered {"errcode": N, ...}; class by N only
        ├── SystemBusy                -1                        transient, retried in budget
        ├── QuotaExceeded             45011                     transient, not before a minute
        ├── CodeInvalid               40029 40163 42003 41008   restart the login
        ├── AuthorizationGone         40030 42002 42007 41003   log in again
        ├── AccessTokenInvalid        40001 40014 42001 41001   refresh the access token
        ├── OpenIDInvalid             40003 41009               a bug in the caller
        ├── AppCredentialsInvalid     40013 40125 41002 41004   configuration error
        ├── ScopeUnauthorized         48001 50001               configuration error
        └── UnknownAPIError           any other errcode

``is_config_error`` on every exception tells "an operator must fix the configuration" apart
from the rest. Messages, reprs and log lines never carry the app secret, a code or a token:
requests' own exceptions embed the full URL (with ``secret=`` and ``code=``), so they are
never stringified and never chained.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import requests

from gateway.providers.transport import (
    RoundTripFailed,
    RoundTripTimeout,
    errcode_of,
    json_object,
    new_session,
    round_trip,
    scrub,
)
from gateway.server.greenlets import gevent_timeout

__all__ = [
    "AccessTokenInvalid",
    "AppCredentialsInvalid",
    "AuthorizationGone",
    "CodeInvalid",
    "OpenIDInvalid",
    "Profile",
    "QuotaExceeded",
    "ScopeUnauthorized",
    "SystemBusy",
    "TokenResult",
    "UnknownAPIError",
    "WeChatAPIError",
    "WeChatClient",
    "WeChatError",
    "WeChatProtocolError",
    "WeChatTimeout",
    "WeChatTransportError",
    "WeChatUnavailable",
]

logger = logging.getLogger("gateway.wechat")


# A token reply is a few hundred bytes; anything far larger is not WeChat talking.
_MAX_BODY: Final = 64 * 1024
# Backoff before retrying -1, in seconds; the last value repeats.
_BACKOFF: Final = (0.2, 0.4, 0.8, 1.0)
# A retry is only worth sending if at least this much of the budget is left for it.
_MIN_ATTEMPT: Final = 0.1
_STATE_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
_OA_SCOPES: Final = frozenset({"snsapi_base", "snsapi_userinfo"})
_LANGS: Final = frozenset({"cn", "en"})
_USERINFO_LANGS: Final = frozenset({"zh_CN", "zh_TW", "en"})
_ERRMSG_RID_RE: Final = re.compile(r"\brid:\s*([0-9a-fA-F-]+)")
_ERRMSG_SUFFIX_RE: Final = re.compile(r",?\s*(?:rid|hints?):.*\Z", re.DOTALL)


# --- exceptions ------------------------------------------------------------------------


class WeChatError(Exception):
    """Base class: a WeChat call failed. ``str()`` is safe to log and show to operators:
    which call failed (``access_token``, ``refresh_token``, ``auth`` or ``userinfo``), what
    happened, and what an operator can do about it."""

    is_config_error: bool = False

    def __init__(self, endpoint: str, meaning: str, hint: str, *, summary: str = "") -> None:
        super().__init__(f"WeChat {endpoint} call failed: {summary or meaning}; {hint}")


class WeChatTransportError(WeChatError):
    """No usable reply arrived: the network or WeChat's front end failed."""


class WeChatTimeout(WeChatTransportError):
    """The call did not complete within its timeout and budget."""


class WeChatUnavailable(WeChatTransportError):
    """The connection was refused, reset or could not be made (DNS, TLS)."""


class WeChatProtocolError(WeChatError):
    """A reply arrived but it is not WeChat's JSON: wrong status, garbage, missing fields."""

    def __init__(self, endpoint: str, meaning: str) -> None:
        super().__init__(
            endpoint, meaning, "WeChat or a proxy in between answered something unexpected"
        )


class WeChatAPIError(WeChatError):
    """WeChat answered with a non-zero ``errcode``. The subclass depends on the code only."""

    def __init__(
        self, endpoint: str, errcode: int, meaning: str, hint: str, *, errmsg: str, rid: str | None
    ) -> None:
        super().__init__(endpoint, meaning, hint, summary=f"errcode {errcode} ({meaning})")
        #: WeChat's numeric error code.
        self.errcode = errcode
        #: WeChat's message without its changing ``rid:``/``hint:`` suffix; for logs only.
        self.errmsg = errmsg
        #: WeChat's request id, which WeChat support asks for.
        self.rid = rid


class SystemBusy(WeChatAPIError):
    """-1: WeChat is busy; retried with backoff within the budget."""


class QuotaExceeded(WeChatAPIError):
    """45011: the per-minute API quota is spent. Not retried: nothing changes before the
    next minute, and every retry spends more of the quota."""


class CodeInvalid(WeChatAPIError):
    """The authorization code is invalid, already used or expired: restart the login."""


class AuthorizationGone(WeChatAPIError):
    """The refresh token is invalid, expired or revoked: the user must log in again."""


class AccessTokenInvalid(WeChatAPIError):
    """The access token is invalid or expired: refresh it."""


class OpenIDInvalid(WeChatAPIError):
    """The openid is malformed or missing: a bug in the caller."""


class AppCredentialsInvalid(WeChatAPIError):
    """The app id or secret is wrong or missing: a configuration error."""

    is_config_error = True


class ScopeUnauthorized(WeChatAPIError):
    """The app (or the user's grant) lacks the scope the call needs."""

    is_config_error = True


class UnknownAPIError(WeChatAPIError):
    """An errcode this module does not know."""


# The single place that decides what an errcode means. ``{key}`` in a hint becomes the
# config path of the app the client was built for (``wechat``, ``wechat.official_account``).
_ERRCODES: Final[Mapping[int, tuple[type[WeChatAPIError], str, str]]] = {
    -1: (SystemBusy, "system busy", "WeChat is overloaded; try again in a moment"),
    45011: (QuotaExceeded, "API minute quota reached", "too many logins this minute; try again"),
    40029: (CodeInvalid, "invalid code", "restart the login"),
    40163: (CodeInvalid, "code already used", "restart the login"),
    42003: (CodeInvalid, "code expired", "restart the login"),
    41008: (CodeInvalid, "code missing", "restart the login"),
    40030: (AuthorizationGone, "invalid refresh token", "the user must log in again"),
    42002: (AuthorizationGone, "refresh token expired", "the user must log in again"),
    42007: (AuthorizationGone, "authorization revoked", "the user must log in again"),
    41003: (AuthorizationGone, "refresh token missing", "the user must log in again"),
    40001: (AccessTokenInvalid, "invalid access token", "refresh the access token"),
    40014: (AccessTokenInvalid, "invalid access token", "refresh the access token"),
    42001: (AccessTokenInvalid, "access token expired", "refresh the access token"),
    41001: (AccessTokenInvalid, "access token missing", "refresh the access token"),
    40003: (OpenIDInvalid, "invalid openid", "the openid does not belong to this token"),
    41009: (OpenIDInvalid, "openid missing", "the openid was not sent"),
    40013: (AppCredentialsInvalid, "invalid app id", "{key}.app_id is wrong"),
    40125: (AppCredentialsInvalid, "invalid app secret", "{key}.app_secret is wrong"),
    41002: (AppCredentialsInvalid, "app id missing", "{key}.app_id is empty"),
    41004: (AppCredentialsInvalid, "app secret missing", "{key}.app_secret is empty"),
    48001: (
        ScopeUnauthorized,
        "API unauthorized",
        "the app lacks permission for this scope; check {scope}",
    ),
    50001: (
        ScopeUnauthorized,
        "user unauthorized",
        "the user did not grant this scope or the app lacks it; check {scope}",
    ),
}


def _scope_advice(config_key: str) -> str:
    """Where a scope problem is fixed. Only the Official Account has a ``scope`` key: the
    website app's scope is always ``snsapi_login``, granted with the app on the platform."""
    if config_key == "wechat":
        return "that wechat.app_id is a website app with WeChat login enabled"
    return f"{config_key}.scope and the account's interface permissions"


def _api_error(
    endpoint: str, errcode: int, errmsg: str, config_key: str, secrets: Iterable[str]
) -> WeChatAPIError:
    kind, meaning, hint = _ERRCODES.get(
        errcode, (UnknownAPIError, "unknown error", "see WeChat's errcode documentation")
    )
    rid_match = _ERRMSG_RID_RE.search(errmsg)
    message = scrub(_ERRMSG_SUFFIX_RE.sub("", errmsg).strip(), secrets)[:200]
    return kind(
        endpoint,
        errcode,
        meaning,
        hint.format(key=config_key, scope=_scope_advice(config_key)),
        errmsg=message,
        rid=rid_match.group(1) if rid_match else None,
    )


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenResult:
    """A successful code exchange or refresh."""

    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str = field(repr=False)
    openid: str
    scope: str
    unionid: str | None
    #: A virtual identity from WeChat's snapshot mode: never log it in as a person.
    is_snapshotuser: bool


@dataclass(frozen=True, slots=True)
class Profile:
    """A user's profile from ``/sns/userinfo``; text is as WeChat sent it, controls included.

    Only the fields the gateway reads are kept (and checked): a malformed ``sex``, ``city``
    or ``privilege`` in the reply must not fail a sign-in that never looks at them.
    """

    openid: str
    nickname: str
    avatar: str
    unionid: str | None


# --- the client ------------------------------------------------------------------------


class WeChatClient:
    """Calls WeChat's web-login API for one app.

    ``timeout`` bounds each HTTP attempt; ``budget`` (default: ``timeout``) bounds all
    attempts of one logical call together, retries and backoff included. ``config_key``
    names the app's section in the config file, so hints point at the key to fix.
    A ``session`` passed in is used as it is; the default one ignores proxy settings from
    the environment, keeps no cookies and is reused for connection pooling.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        api_base: str,
        open_base: str,
        timeout: float,
        lang: str = "cn",
        session: requests.Session | None = None,
        budget: float | None = None,
        config_key: str = "wechat",
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if lang not in _LANGS:
            raise ValueError("lang must be cn or en")
        if timeout <= 0 or (budget is not None and budget <= 0):
            raise ValueError("timeout and budget must be positive")
        self.app_id = app_id
        self._app_secret = app_secret
        self._api_base = api_base.rstrip("/")
        self._open_base = open_base.rstrip("/")
        self._timeout = timeout
        self._budget = timeout if budget is None else budget
        self._lang = lang
        self._config_key = config_key
        self._sleep = sleep
        self._monotonic = monotonic
        self._session = session if session is not None else new_session()
        self._timer = gevent_timeout()

    def __repr__(self) -> str:
        return f"<WeChatClient app_id={self.app_id!r} api_base={self._api_base!r}>"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # -- browser URLs --

    def qrconnect_url(self, redirect_uri: str, state: str) -> str:
        """The website QR login page (desktop browsers)."""
        _check_state(state)
        return (
            f"{self._open_base}/connect/qrconnect?appid={quote(self.app_id, safe='')}"
            f"&redirect_uri={_encode_redirect_uri(redirect_uri)}"
            f"&response_type=code&scope=snsapi_login&state={state}&lang={self._lang}"
            "#wechat_redirect"
        )

    def oauth2_authorize_url(self, redirect_uri: str, state: str, scope: str) -> str:
        """The in-WeChat authorize page; WeChat checks the parameter order strictly."""
        _check_state(state)
        if scope not in _OA_SCOPES:
            raise ValueError("scope must be snsapi_base or snsapi_userinfo")
        return (
            f"{self._open_base}/connect/oauth2/authorize?appid={quote(self.app_id, safe='')}"
            f"&redirect_uri={_encode_redirect_uri(redirect_uri)}"
            f"&response_type=code&scope={scope}&state={state}#wechat_redirect"
        )

    # -- API calls --

    def exchange_code(self, code: str, *, deadline: float | None = None) -> TokenResult:
        """Trade an authorization code for tokens. The code is spent by this call.

        Never retried after a timeout or a broken connection: the request may have reached
        WeChat and spent the code, and a retry would only fail with 40163. Retried on -1,
        which WeChat returns when it turned the request away before looking at the code;
        if it had been spent after all, the retry fails cleanly with 40163.
        """
        body = self._call(
            "access_token",
            "/sns/oauth2/access_token",
            {
                "appid": self.app_id,
                "secret": self._app_secret,
                "code": code,
                "grant_type": "authorization_code",
            },
            secrets=(code,),
            deadline=deadline,
        )
        return _token_result("access_token", body)

    def refresh(self, refresh_token: str, *, deadline: float | None = None) -> TokenResult:
        """Get a fresh access token; the refresh token itself is not renewed by WeChat."""
        body = self._call(
            "refresh_token",
            "/sns/oauth2/refresh_token",
            {"appid": self.app_id, "grant_type": "refresh_token", "refresh_token": refresh_token},
            secrets=(refresh_token,),
            deadline=deadline,
        )
        return _token_result("refresh_token", body)

    def check_auth(self, access_token: str, openid: str, *, deadline: float | None = None) -> None:
        """Return if the access token is still valid for this openid, else raise."""
        body = self._call(
            "auth",
            "/sns/auth",
            {"access_token": access_token, "openid": openid},
            secrets=(access_token,),
            deadline=deadline,
        )
        if "errcode" not in body:
            raise WeChatProtocolError("auth", "the reply has no errcode")

    def userinfo(
        self,
        access_token: str,
        openid: str,
        lang: str = "zh_CN",
        *,
        deadline: float | None = None,
    ) -> Profile:
        """The user's profile; needs a ``snsapi_userinfo`` or ``snsapi_login`` token."""
        if lang not in _USERINFO_LANGS:
            raise ValueError("lang must be zh_CN, zh_TW or en")
        body = self._call(
            "userinfo",
            "/sns/userinfo",
            {"access_token": access_token, "openid": openid, "lang": lang},
            secrets=(access_token,),
            deadline=deadline,
        )
        profile = _profile(body)
        if profile.openid and profile.openid != openid:
            raise WeChatProtocolError("userinfo", "the profile is for a different openid")
        return profile

    # -- machinery --

    def _call(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, str],
        *,
        secrets: tuple[str, ...],
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """One logical call: attempts and backoff end by the budget or ``deadline``.

        ``deadline`` (on the client's monotonic clock) lets a caller make several calls
        within one overall time limit, e.g. a whole sign-in within ``wechat.timeout``.
        """
        secrets = (self._app_secret, *secrets)
        own_deadline = self._monotonic() + self._budget
        deadline = own_deadline if deadline is None else min(deadline, own_deadline)
        attempt = 0
        while True:
            remaining = deadline - self._monotonic()
            try:
                if remaining <= 0:
                    raise WeChatTimeout(
                        endpoint,
                        f"no time left of the {self._budget:g}s budget",
                        _transport_hint(self._api_base),
                    )
                body = self._attempt(endpoint, path, params, min(self._timeout, remaining))
                errcode = _errcode(endpoint, body)
                if errcode:
                    raise _api_error(
                        endpoint, errcode, str(body.get("errmsg", "")), self._config_key, secrets
                    )
            except SystemBusy as exc:
                delay = _BACKOFF[min(attempt, len(_BACKOFF) - 1)]
                if deadline - self._monotonic() - delay < _MIN_ATTEMPT:
                    _log_failure(exc)
                    raise
                # Not a failure yet: the operator hears about it if the retries run out.
                logger.info("%s; retrying in %gs", exc, delay)
                self._sleep(delay)
                attempt += 1
                continue
            except WeChatError as exc:
                _log_failure(exc)
                raise
            return body

    def _attempt(
        self, endpoint: str, path: str, params: Mapping[str, str], timeout: float
    ) -> dict[str, Any]:
        """One HTTP round trip within ``timeout`` as a whole, however slowly WeChat's bytes
        come. requests' exceptions are never let out or chained."""
        hint = _transport_hint(self._api_base)
        timer = self._timer(timeout) if self._timer is not None else None
        failure: WeChatTransportError | None = None
        try:
            status, raw = round_trip(
                self._session, self._api_base + path, params, timeout, _MAX_BODY, timer
            )
        except RoundTripTimeout as exc:
            what = "no whole reply" if exc.whole else "no reply"
            failure = WeChatTimeout(endpoint, f"{what} within {timeout:.2g}s", hint)
        except RoundTripFailed as exc:
            failure = WeChatUnavailable(endpoint, exc.reason, hint)
        if failure is not None:
            # Raised outside the except block: nothing of the round trip is chained to it.
            raise failure
        if status != 200:
            raise WeChatProtocolError(endpoint, f"HTTP status {status}")
        if len(raw) > _MAX_BODY:
            raise WeChatProtocolError(endpoint, f"a reply larger than {_MAX_BODY} bytes")
        return _decode(endpoint, raw)


def _check_state(state: str) -> None:
    if not _STATE_RE.fullmatch(state):
        raise ValueError("state must be 1 to 128 characters of [A-Za-z0-9]")


def _encode_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("redirect_uri must be an absolute http or https URL")
    return quote(uri, safe="")


def _transport_hint(api_base: str) -> str:
    return f"check that this host can reach {api_base}"


def _decode(endpoint: str, raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    if body is None:
        raise WeChatProtocolError(endpoint, "the reply is not a JSON object")
    return body


def _errcode(endpoint: str, body: dict[str, Any]) -> int:
    errcode = errcode_of(body)
    if errcode is None:
        raise WeChatProtocolError(endpoint, "errcode is not a number")
    return errcode


def _token_result(endpoint: str, body: Mapping[str, Any]) -> TokenResult:
    return TokenResult(
        # Only the token and the openid are needed to sign in; the rest is read when sent.
        access_token=_required_str(endpoint, body, "access_token"),
        expires_in=_optional_int(endpoint, body, "expires_in", 7200),
        refresh_token=_optional_str(endpoint, body, "refresh_token"),
        openid=_required_str(endpoint, body, "openid"),
        scope=_optional_str(endpoint, body, "scope"),
        unionid=_optional_str(endpoint, body, "unionid") or None,
        # Anything but an explicit 0 counts as a snapshot: wrongly refusing a virtual
        # identity is better than letting one in as a person.
        is_snapshotuser=body.get("is_snapshotuser", 0) not in (0, "0"),
    )


def _profile(body: Mapping[str, Any]) -> Profile:
    return Profile(
        openid=_optional_str("userinfo", body, "openid"),
        nickname=_optional_str("userinfo", body, "nickname"),
        avatar=_optional_str("userinfo", body, "headimgurl"),
        unionid=_optional_str("userinfo", body, "unionid") or None,
    )


def _required_str(endpoint: str, body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise WeChatProtocolError(endpoint, f"{key} is missing or not a string")
    return value


def _optional_int(endpoint: str, body: Mapping[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeChatProtocolError(endpoint, f"{key} is not a number")
    return value


def _optional_str(endpoint: str, body: Mapping[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise WeChatProtocolError(endpoint, f"{key} is not a string")
    return value


def _log_failure(exc: WeChatError) -> None:
    if isinstance(exc, WeChatAPIError):
        logger.warning("%s (errmsg %r, rid %s)", exc, exc.errmsg, exc.rid or "-")
    else:
        logger.warning("%s", exc)
