"""The WeCom (企业微信) server API client and its error classes.

``WeComClient`` makes the ``/cgi-bin/`` calls a sign-in and a revalidation need, for one
self-built app (corp id, agent id, secret): who a callback's code belongs to
(``auth/getuserinfo``, or the legacy ``user/getuserinfo``), a member's name, departments
and status (``user/get``), and the department tree (``department/list``). It is built from
plain values, holds one pooled ``requests.Session`` and is safe to share between the
threads of one worker.

The app's access token is not the client's: ``AccessTokens`` (``tokens``) caches it in the
state store for every worker and replica, and calls back into ``fetch_token`` (``gettoken``)
when it needs a new one. Each API call puts the token in the query (WeCom's only way); when
WeCom says it is invalid or expired (40014, 42001, or 40001 anywhere but ``gettoken``) the
token is dropped, refetched once and the call retried once.

It is not a WeCom SDK: messaging, the contacts-sync API and third-party ("ServiceApp")
suite tokens are out of scope.

The wire is read the way WeCom writes it (see the protocol reference): always HTTP 200,
JSON, a non-zero ``errcode`` for every error, branched on by number only; ``errmsg`` is
``<text>, hint: [<25 digits>], from ip: <ip>, more info at ...``, and the hint digits are
what WeCom support asks for, so they are kept for the operator's log line.

Every failure is one of these exceptions; the tree is the map from failure to behaviour::

    WeComError                         anything this module raises
    ├── WeComTransportError            no usable reply arrived                (transient)
    │   ├── WeComTimeout               the time budget ran out
    │   └── WeComUnavailable           refused, reset, DNS or TLS failure
    ├── WeComProtocolError             HTTP status not 200, a body that is not a JSON object,
    │                                  a field the gateway needs missing or unusable
    └── WeComAPIError                  WeCom answered {"errcode": N, ...}; class by N only
        ├── SystemBusy                 -1                       retried with backoff (≤3)
        ├── RateLimited                45009 45033              back off; token kept
        ├── AccessTokenInvalid         40014 42001, 40001       drop the token, refetch and
        │                              (not on gettoken)        retry once
        ├── CredentialsInvalid         40001 (gettoken) 40013   configuration error; never
        │                              40091 41002 41004        retried (IP-ban risk)
        ├── AppMisconfigured           40056 48002 50001 50003  configuration error
        │                              60020 301002
        ├── CodeInvalid                40029 42003              restart the login
        ├── MemberNotVisible           60011 60021              deny the sign-in (403)
        │   └── MemberNotFound         60111                    deny the sign-in (403)
        ├── DepartmentNotFound         60003                    the department is unknown
        ├── UserTicketInvalid          84014 84015              redo the privateinfo OAuth
        ├── RequestInvalid             41001 41008 41009 84025  a bug in the caller
        └── UnknownAPIError            any other errcode

``is_config_error`` on every exception tells "an operator must fix the configuration" apart
from the rest. Messages, reprs and log lines never carry the secret, a code, a token or a
user ticket: requests' own exceptions embed the full URL (with ``corpsecret=``, ``code=``
and ``access_token=``), so they are never stringified and never chained.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

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

if TYPE_CHECKING:
    from gateway.providers.wecom.tokens import AccessTokens

__all__ = [
    "USERINFO_APIS",
    "AccessTokenInvalid",
    "AppMisconfigured",
    "CodeInvalid",
    "CredentialsInvalid",
    "Department",
    "DepartmentNotFound",
    "ExternalUser",
    "IssuedToken",
    "Member",
    "MemberNotFound",
    "MemberNotVisible",
    "RateLimited",
    "RequestInvalid",
    "SystemBusy",
    "UnknownAPIError",
    "UserTicketInvalid",
    "WeComAPIError",
    "WeComClient",
    "WeComError",
    "WeComProtocolError",
    "WeComTimeout",
    "WeComTransportError",
    "WeComUnavailable",
    "WeComUser",
]

logger = logging.getLogger("gateway.wecom")

_T = TypeVar("_T")


#: The ``userinfo_api`` choices: ``auth`` (``auth/getuserinfo``), ``legacy``
#: (``user/getuserinfo``), ``auto`` (the first, falling back to the second for good when
#: WeCom does not answer it).
USERINFO_APIS: Final = frozenset({"auth", "legacy", "auto"})

# A user or token reply is a few hundred bytes; a department list of a large company is
# the one reply that grows (about 150 bytes a department).
_MAX_BODY: Final = 64 * 1024
_MAX_LIST_BODY: Final = 8 * 1024 * 1024
# Backoff before retrying -1, in seconds; at most this many retries.
_BACKOFF: Final = (0.2, 0.4, 0.8)
# A retry is only worth sending if at least this much of the budget is left for it.
_MIN_ATTEMPT: Final = 0.1
# Tokens WeCom may hand out for longer are still refreshed daily.
_MAX_TOKEN_LIFETIME: Final = 86400
# WeCom's userid: 1-64 of [0-9A-Za-z_-@.] starting alphanumeric; a linked corp's member
# comes as "CorpId/userid".
_USERID_RE: Final = re.compile(r"(?:[0-9A-Za-z]{1,64}/)?[0-9A-Za-z][0-9A-Za-z_\-@.]{0,63}")
# openids, external_userids and tokens: printable ASCII without spaces.
_OPAQUE_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{1,2048}")
_ERRMSG_HINT_RE: Final = re.compile(r"\bhint:\s*\[([0-9A-Za-z_-]{1,64})\]")
_ERRMSG_IP_RE: Final = re.compile(r"\bfrom ip:\s*([0-9A-Fa-f.:]{2,45})")
_ERRMSG_SUFFIX_RE: Final = re.compile(
    r",?\s*(?:hint:|from ip:|more info at\b).*\Z", re.DOTALL | re.IGNORECASE
)
_UNPRINTABLE_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,10}")


# --- exceptions ------------------------------------------------------------------------


class WeComError(Exception):
    """Base class: a WeCom call failed. ``str()`` is safe to log and show to operators:
    which call failed (``gettoken``, ``auth/getuserinfo``, ``user/getuserinfo``,
    ``user/get``, ``department/list``), what happened, and what an operator can do."""

    is_config_error: bool = False

    def __init__(self, endpoint: str, meaning: str, advice: str, *, summary: str = "") -> None:
        super().__init__(f"WeCom {endpoint} call failed: {summary or meaning}; {advice}")
        #: The API path below ``/cgi-bin/`` that failed.
        self.endpoint = endpoint


class WeComTransportError(WeComError):
    """No usable reply arrived: the network or WeCom's front end failed."""


class WeComTimeout(WeComTransportError):
    """The call did not complete within its timeout and budget."""


class WeComUnavailable(WeComTransportError):
    """The connection was refused, reset or could not be made (DNS, TLS)."""


class WeComProtocolError(WeComError):
    """A reply arrived but it is not WeCom's JSON: wrong status, garbage, missing fields."""

    def __init__(self, endpoint: str, meaning: str, *, status: int | None = None) -> None:
        super().__init__(
            endpoint, meaning, "WeCom or a proxy in between answered something unexpected"
        )
        #: The HTTP status when it was not 200.
        self.status = status


class WeComAPIError(WeComError):
    """WeCom answered with a non-zero ``errcode``. The subclass depends on the code only
    (and, for 40001, on whether ``gettoken`` said it)."""

    def __init__(
        self,
        endpoint: str,
        errcode: int,
        meaning: str,
        advice: str,
        *,
        errmsg: str,
        hint: str | None,
        from_ip: str | None,
    ) -> None:
        hinted = f", hint {hint}" if hint else ""
        super().__init__(
            endpoint, meaning, advice, summary=f"errcode {errcode} ({meaning}{hinted})"
        )
        #: WeCom's numeric error code.
        self.errcode = errcode
        #: WeCom's text without its ``hint``/``from ip``/``more info`` suffix; for logs.
        self.errmsg = errmsg
        #: The digits in ``hint: [...]``, which WeCom support asks for.
        self.hint = hint
        #: The address WeCom saw the call come from (the one to allow for 60020).
        self.from_ip = from_ip


class SystemBusy(WeComAPIError):
    """-1: WeCom is busy; retried with backoff within the budget, at most three times."""


class RateLimited(WeComAPIError):
    """45009 (frequency) or 45033 (concurrency): a WeCom limit is reached. Not retried at
    once, and the token is kept: refetching it is itself limited (and 45009 on ``gettoken``
    is also what a banned IP gets)."""

    #: Seconds WeCom blocks a caller over its per-minute limit.
    retry_after = 60


class AccessTokenInvalid(WeComAPIError):
    """The access token is invalid or expired: dropped, refetched and the call retried
    once; raised only when the fresh token is refused too."""


class CredentialsInvalid(WeComAPIError):
    """The corp id or secret is wrong or missing: a configuration error, never retried
    (repeating a wrong secret gets the host's IP banned for an hour)."""

    is_config_error = True


class AppMisconfigured(WeComAPIError):
    """The app is disabled, lacks a permission, does not trust the callback's domain or
    this host's IP, or ``agent_id`` is not the secret's app: a configuration error."""

    is_config_error = True


class CodeInvalid(WeComAPIError):
    """The code is invalid, already used, expired or from another corp: restart the
    login; never reuse the code."""


class MemberNotVisible(WeComAPIError):
    """The member (or, for ``department/list``, the department) is outside the app's
    visibility scope: the sign-in is refused with a 403 that says so."""


class MemberNotFound(MemberNotVisible):
    """60111: no such userid in the corp (removed, or renamed since)."""


class DepartmentNotFound(WeComAPIError):
    """60003: no such department."""


class UserTicketInvalid(WeComAPIError):
    """The user ticket expired or is invalid: redo the ``snsapi_privateinfo`` OAuth."""


class RequestInvalid(WeComAPIError):
    """A required parameter was missing or malformed: a bug in the caller."""


class UnknownAPIError(WeComAPIError):
    """An errcode this module does not know."""


_REFETCH: Final = "the access token is dropped, refetched and the call retried once"
_BUG: Final = "a bug in wechat-gateway; please report it"

# The single place that decides what an errcode means. ``{key}`` in advice becomes the
# config section of the app (``wecom``); ``{ip}`` the address WeCom saw.
_ERRCODES: Final[Mapping[int, tuple[type[WeComAPIError], str, str]]] = {
    -1: (SystemBusy, "system busy", "WeCom is overloaded; try again in a moment"),
    45009: (
        RateLimited,
        "API frequency limit reached",
        "WeCom blocks this caller for a minute (an hour when over the hourly limit, or "
        "after repeated wrong secrets); try again later",
    ),
    45033: (RateLimited, "API concurrency limit reached", "too many calls at once; try again"),
    40001: (AccessTokenInvalid, "invalid credential", _REFETCH),
    40014: (AccessTokenInvalid, "invalid access token", _REFETCH),
    42001: (AccessTokenInvalid, "access token expired", _REFETCH),
    40013: (CredentialsInvalid, "invalid corp id", "{key}.corp_id is wrong (ww…, 我的企业)"),
    40091: (
        CredentialsInvalid,
        "secret is invalid",
        "{key}.secret is wrong: copy it from the app's page in the admin console",
    ),
    41002: (CredentialsInvalid, "corp id missing", "{key}.corp_id is empty"),
    41004: (CredentialsInvalid, "secret missing", "{key}.secret is empty"),
    40056: (AppMisconfigured, "invalid agent id", "{key}.agent_id is wrong"),
    301002: (
        AppMisconfigured,
        "the token belongs to another app",
        "{key}.agent_id and {key}.secret must be of the same app",
    ),
    48002: (
        AppMisconfigured,
        "API forbidden",
        "the app lacks permission for this API (its 权限 and visibility in the admin console)",
    ),
    50003: (AppMisconfigured, "app disabled", "enable the app in WeCom's admin console"),
    50001: (
        AppMisconfigured,
        "redirect_uri unauthorized",
        "the callback's host must be the app's trusted domain (授权回调域 / 可信域名), and "
        "the code must be redeemed by the app it was issued for",
    ),
    60020: (
        AppMisconfigured,
        "this host's IP is not trusted",
        "add {ip} to the app's 企业可信IP in the admin console (takes about a minute)",
    ),
    40029: (CodeInvalid, "invalid code", "restart the login"),
    42003: (CodeInvalid, "code expired", "restart the login"),
    60011: (
        MemberNotVisible,
        "no privilege",
        "the member or department is outside the app's visibility scope (可见范围)",
    ),
    60021: (
        MemberNotVisible,
        "not in the app's visibility scope",
        "the member is outside the app's visibility scope (可见范围)",
    ),
    60111: (MemberNotFound, "userid not found", "the member is not in the corp (or was renamed)"),
    60003: (DepartmentNotFound, "department not found", "check the department id"),
    84014: (UserTicketInvalid, "user ticket expired", "redo the snsapi_privateinfo login"),
    84015: (UserTicketInvalid, "invalid user ticket", "redo the snsapi_privateinfo login"),
    41001: (RequestInvalid, "access token missing", _BUG),
    41008: (RequestInvalid, "code missing", _BUG),
    41009: (RequestInvalid, "userid missing", _BUG),
    84025: (RequestInvalid, "invalid state", _BUG),
}

# ``gettoken``'s own reading of 40001: the secret, not a token, is wrong.
_GETTOKEN_40001: Final[tuple[type[WeComAPIError], str, str]] = (
    CredentialsInvalid,
    "invalid credential",
    "{key}.secret is wrong, or is not the secret of {key}.agent_id's app: copy it from the "
    "app's page in the admin console",
)


def api_error(
    endpoint: str,
    errcode: int,
    errmsg: str,
    *,
    config_key: str,
    secrets: Iterable[str] = (),
    note: str = "",
) -> WeComAPIError:
    """The exception for ``errcode`` from ``endpoint``, its text made safe to log.

    ``note`` is added to the advice (``AccessTokens`` says for how long a remembered
    failure stands)."""
    if errcode == 40001 and endpoint == "gettoken":
        kind, meaning, advice = _GETTOKEN_40001
    else:
        kind, meaning, advice = _ERRCODES.get(
            errcode, (UnknownAPIError, "unknown error", "see WeCom's errcode documentation")
        )
    hint = _ERRMSG_HINT_RE.search(errmsg)
    from_ip = _ERRMSG_IP_RE.search(errmsg)
    text = scrub(_ERRMSG_SUFFIX_RE.sub("", errmsg).strip(), secrets)
    advice = advice.format(key=config_key, ip=from_ip.group(1) if from_ip else "this host's IP")
    return kind(
        endpoint,
        errcode,
        meaning,
        f"{advice}; {note}" if note else advice,
        errmsg=_UNPRINTABLE_RE.sub("?", text)[:200],
        hint=hint.group(1) if hint else None,
        from_ip=from_ip.group(1) if from_ip else None,
    )


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What ``gettoken`` handed out."""

    value: str = field(repr=False)
    #: Seconds it is valid for, counted from when the request was sent.
    expires_in: int


@dataclass(frozen=True, slots=True)
class WeComUser:
    """A member of the corp, as a code's redemption names them."""

    #: In the case WeCom gave it; compare case-insensitively (``key``).
    userid: str
    #: Only for ``snsapi_privateinfo`` codes of visible members. Secret.
    user_ticket: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """The userid as WeCom compares it: case-insensitively."""
        return self.userid.lower()


@dataclass(frozen=True, slots=True)
class ExternalUser:
    """Someone who is not a member: a corp-scoped openid (an ``external_userid`` too for
    the corp's customers)."""

    openid: str
    external_userid: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A member from ``user/get``. Only what the gateway reads is kept (and checked): a
    malformed ``gender`` or ``extattr`` must not fail a sign-in that never looks at it."""

    #: In the case WeCom gave it.
    userid: str
    #: As WeCom sent it, control characters included ("" when absent).
    name: str
    #: The departments visible to the app, in WeCom's order (empty when none).
    departments: tuple[int, ...]
    #: 1 active, 2 disabled, 4 not activated, 5 left; None when WeCom did not say.
    status: int | None
    #: An http(s) URL, or "" (apps created from 2022-06-20 on get none).
    avatar: str

    @property
    def active(self) -> bool:
        """Whether the member may sign in: WeCom says active (status 1), and nothing else."""
        return self.status == 1


@dataclass(frozen=True, slots=True)
class Department:
    """One department from ``department/list``; the root is id 1 with ``parentid`` 0."""

    id: int
    name: str
    parentid: int


# --- the client ------------------------------------------------------------------------


class WeComClient:
    """Calls WeCom's server API for one self-built app.

    ``timeout`` bounds each HTTP attempt; ``budget`` (default: ``timeout``) bounds all
    attempts of one logical call together: waiting for or fetching the token, retries,
    backoff, the refetch after an invalid token. Each public call also takes ``deadline``
    (on the ``monotonic`` clock) so a caller can bound several calls together, e.g. a whole
    sign-in within ``wecom.timeout``.

    ``userinfo_api`` picks how a code is redeemed (see ``USERINFO_APIS``). ``config_key``
    names the app's section in the config file, so advice points at the key to fix. A
    ``session`` passed in is used as it is; the default one ignores proxy settings from the
    environment, keeps no cookies and is reused for connection pooling.
    """

    def __init__(
        self,
        corp_id: str,
        agent_id: int,
        secret: str,
        *,
        api_base: str,
        timeout: float,
        tokens: AccessTokens,
        userinfo_api: str = "auto",
        session: requests.Session | None = None,
        budget: float | None = None,
        config_key: str = "wecom",
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(corp_id, str) or not corp_id:
            raise ValueError("corp_id must be a non-empty string")
        if isinstance(agent_id, bool) or not isinstance(agent_id, int) or agent_id <= 0:
            raise ValueError("agent_id must be a positive integer")
        if not isinstance(secret, str) or not secret:
            raise ValueError("secret must be a non-empty string")
        if userinfo_api not in USERINFO_APIS:
            raise ValueError("userinfo_api must be auth, legacy or auto")
        if timeout <= 0 or (budget is not None and budget <= 0):
            raise ValueError("timeout and budget must be positive")
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.config_key = config_key
        self._secret = secret
        self._api_base = api_base.rstrip("/")
        self._timeout = timeout
        self._budget = timeout if budget is None else budget
        self._tokens = tokens
        self._userinfo_api = userinfo_api
        self._sleep = sleep
        self._monotonic = monotonic
        self._session = session if session is not None else new_session()
        self._timer = gevent_timeout()
        #: Tells a failure remembered for one secret from another (a fixed config).
        self.credential_id = hashlib.sha256(
            f"wecom-gateway credential\0{corp_id}\0{agent_id}\0{secret}".encode()
        ).hexdigest()[:32]

    def __repr__(self) -> str:
        return (
            f"<WeComClient corp_id={self.corp_id!r} agent_id={self.agent_id} "
            f"api_base={self._api_base!r}>"
        )

    @property
    def monotonic(self) -> Callable[[], float]:
        """The clock ``deadline`` arguments are read on."""
        return self._monotonic

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # -- API calls --

    def fetch_token(self, *, deadline: float | None = None) -> IssuedToken:
        """A new access token from ``gettoken``. Called by ``AccessTokens`` only, which
        caches it, serializes the fetches and reports the failures; nothing is logged here.
        """
        body = self._request(
            "gettoken",
            {"corpid": self.corp_id, "corpsecret": self._secret},
            secrets=(),
            deadline=self._deadline(deadline),
        )
        value = body.get("access_token")
        if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
            raise WeComProtocolError("gettoken", "access_token is missing or malformed")
        expires_in = _int_field("gettoken", body, "expires_in", default=7200)
        if expires_in is None or expires_in <= 0:
            raise WeComProtocolError("gettoken", "expires_in is not a positive number")
        return IssuedToken(value, min(expires_in, _MAX_TOKEN_LIFETIME))

    def user_identity(
        self, code: str, *, deadline: float | None = None
    ) -> WeComUser | ExternalUser:
        """Who a callback's code belongs to. The code is spent by this call.

        Never retried after a timeout or a broken connection: the request may have reached
        WeCom and spent the code. Retried on -1 and after an invalid token, which WeCom
        answers before looking at the code. With ``userinfo_api`` ``auto``, a WeCom that
        does not answer ``auth/getuserinfo`` (HTTP 404 or 48002, also before the code is
        looked at) is asked the legacy ``user/getuserinfo`` instead, from then on.
        """
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        deadline = self._deadline(deadline)
        if self._userinfo_api == "legacy":
            return self._api(
                "user/getuserinfo", {"code": code}, (code,), deadline, _legacy_identity
            )
        try:
            return self._api(
                "auth/getuserinfo",
                {"code": code},
                (code,),
                deadline,
                _auth_identity,
                quiet=self._may_fall_back,
            )
        except (WeComProtocolError, AppMisconfigured) as exc:
            if not self._may_fall_back(exc):
                raise
            logger.warning(
                "%s; using the legacy user/getuserinfo from now on "
                "(set %s.userinfo_api: legacy to skip this)",
                exc,
                self.config_key,
            )
            self._userinfo_api = "legacy"
            return self._api(
                "user/getuserinfo", {"code": code}, (code,), deadline, _legacy_identity
            )

    def member(self, userid: str, *, deadline: float | None = None) -> Member:
        """The member's name, departments, status and avatar from ``user/get``."""
        if not isinstance(userid, str) or not _USERID_RE.fullmatch(userid):
            raise ValueError("userid is not a WeCom userid")

        def read(body: Mapping[str, Any]) -> Member:
            member = _member(body)
            if member.userid.lower() != userid.lower():
                raise WeComProtocolError("user/get", "the reply is for a different userid")
            return member

        return self._api("user/get", {"userid": userid}, (), self._deadline(deadline), read)

    def departments(
        self, root: int | None = None, *, deadline: float | None = None
    ) -> list[Department]:
        """The departments visible to the app, at and below ``root`` (all without it)."""
        params: dict[str, str] = {}
        if root is not None:
            if isinstance(root, bool) or not isinstance(root, int) or root <= 0:
                raise ValueError("root must be a positive department id")
            params["id"] = str(root)
        return self._api(
            "department/list",
            params,
            (),
            self._deadline(deadline),
            _departments,
            max_body=_MAX_LIST_BODY,
        )

    # -- machinery --

    def _deadline(self, deadline: float | None) -> float:
        own = self._monotonic() + self._budget
        return own if deadline is None else min(deadline, own)

    def _may_fall_back(self, exc: WeComError) -> bool:
        if self._userinfo_api != "auto":
            return False
        if isinstance(exc, WeComProtocolError):
            return exc.status == 404
        return isinstance(exc, AppMisconfigured) and exc.errcode == 48002

    def _api(
        self,
        endpoint: str,
        params: Mapping[str, str],
        secrets: tuple[str, ...],
        deadline: float,
        read: Callable[[Mapping[str, Any]], _T],
        *,
        max_body: int = _MAX_BODY,
        quiet: Callable[[WeComError], bool] | None = None,
    ) -> _T:
        """One call with the app's token, its reply ``read`` into a result: an invalid
        token is dropped, refetched and the call retried once. Failures are logged here,
        once; the token's own failures by ``AccessTokens``."""
        refetched = False
        while True:
            token = self._tokens.get(self, deadline=deadline)
            try:
                body = self._request(
                    endpoint,
                    {**params, "access_token": token},
                    secrets=(token, *secrets),
                    deadline=deadline,
                    max_body=max_body,
                )
                return read(body)
            except AccessTokenInvalid as exc:
                self._tokens.invalidate(self, token)
                if refetched:
                    _log_failure(exc)
                    raise
                logger.info("%s", exc)
                refetched = True
            except WeComError as exc:
                if quiet is None or not quiet(exc):
                    _log_failure(exc)
                raise

    def _request(
        self,
        endpoint: str,
        params: Mapping[str, str],
        *,
        secrets: tuple[str, ...],
        deadline: float,
        max_body: int = _MAX_BODY,
    ) -> dict[str, Any]:
        """Attempts until success, an error, or the last -1 within ``deadline``."""
        secrets = (self._secret, *secrets)
        busy = 0
        while True:
            remaining = deadline - self._monotonic()
            try:
                if remaining <= 0:
                    raise WeComTimeout(
                        endpoint,
                        f"no time left of the {self._budget:g}s budget",
                        _transport_advice(self._api_base),
                    )
                body = self._attempt(endpoint, params, min(self._timeout, remaining), max_body)
                errcode = _errcode(endpoint, body)
                if errcode:
                    raise api_error(
                        endpoint,
                        errcode,
                        _errmsg(body),
                        config_key=self.config_key,
                        secrets=secrets,
                    )
            except SystemBusy as exc:
                if busy >= len(_BACKOFF):
                    raise
                delay = _BACKOFF[busy]
                if deadline - self._monotonic() - delay < _MIN_ATTEMPT:
                    raise
                # Not a failure yet: the operator hears about it if the retries run out.
                logger.info("%s; retrying in %gs", exc, delay)
                self._sleep(delay)
                busy += 1
                continue
            return body

    def _attempt(
        self, endpoint: str, params: Mapping[str, str], timeout: float, max_body: int
    ) -> dict[str, Any]:
        """One HTTP round trip within ``timeout`` as a whole, however slowly WeCom's bytes
        come. requests' exceptions are never let out or chained."""
        advice = _transport_advice(self._api_base)
        timer = self._timer(timeout) if self._timer is not None else None
        failure: WeComTransportError | None = None
        try:
            status, raw = round_trip(
                self._session,
                f"{self._api_base}/cgi-bin/{endpoint}",
                params,
                timeout,
                max_body,
                timer,
            )
        except RoundTripTimeout as exc:
            what = "no whole reply" if exc.whole else "no reply"
            failure = WeComTimeout(endpoint, f"{what} within {timeout:.2g}s", advice)
        except RoundTripFailed as exc:
            failure = WeComUnavailable(endpoint, exc.reason, advice)
        if failure is not None:
            # Raised outside the except block: nothing of the round trip is chained to it.
            raise failure
        if status != 200:
            raise WeComProtocolError(endpoint, f"HTTP status {status}", status=status)
        if len(raw) > max_body:
            raise WeComProtocolError(endpoint, f"a reply larger than {max_body} bytes")
        return _decode(endpoint, raw)


def _transport_advice(api_base: str) -> str:
    return f"check that this host can reach {api_base}"


# --- reading replies -------------------------------------------------------------------


def _decode(endpoint: str, raw: bytes) -> dict[str, Any]:
    body = json_object(raw)
    if body is None:
        raise WeComProtocolError(endpoint, "the reply is not a JSON object")
    return body


def _errcode(endpoint: str, body: dict[str, Any]) -> int:
    # WeCom always sends errcode; a success without it is read as a success, and then
    # the fields the caller needs decide.
    errcode = errcode_of(body)
    if errcode is None:
        raise WeComProtocolError(endpoint, "errcode is not a number")
    return errcode


def _errmsg(body: Mapping[str, Any]) -> str:
    value = body.get("errmsg", "")
    return value[:2000] if isinstance(value, str) else ""


def _text(body: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a non-empty string (or a number, read as text)."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value:
            return value
    return None


def _auth_identity(body: Mapping[str, Any]) -> WeComUser | ExternalUser:
    return _identity("auth/getuserinfo", body)


def _legacy_identity(body: Mapping[str, Any]) -> WeComUser | ExternalUser:
    return _identity("user/getuserinfo", body)


def _identity(endpoint: str, body: Mapping[str, Any]) -> WeComUser | ExternalUser:
    # Either endpoint may use either spelling: lowercase (auth/) or CamelCase (user/).
    userid = _text(body, "userid", "UserId")
    if userid is not None:
        if not _USERID_RE.fullmatch(userid):
            raise WeComProtocolError(endpoint, "userid is not a WeCom userid")
        ticket = _text(body, "user_ticket", "UserTicket")
        if ticket is not None and not _TOKEN_RE.fullmatch(ticket):
            ticket = None
        return WeComUser(userid, ticket)
    openid = _text(body, "openid", "OpenId")
    if openid is not None:
        if not _OPAQUE_RE.fullmatch(openid):
            raise WeComProtocolError(endpoint, "openid is malformed")
        external = _text(body, "external_userid", "ExternalUserId")
        return ExternalUser(
            openid, external if external and _OPAQUE_RE.fullmatch(external) else None
        )
    raise WeComProtocolError(endpoint, "the reply names neither a userid nor an openid")


def _int_field(
    endpoint: str, body: Mapping[str, Any], key: str, *, default: int | None = None
) -> int | None:
    """An integer WeCom may send as a number, a digit string or an integral float;
    ``default`` when absent or null."""
    value = body.get(key)
    if value is None:
        return default
    number = _as_int(value)
    if number is None:
        raise WeComProtocolError(endpoint, f"{key} is not a number")
    return number


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _department_ids(value: object) -> tuple[int, ...]:
    """``department`` as WeCom sends it (a list of ids), or oddly: ids as strings, one
    bare id, a comma-separated string. Order kept, repeats dropped."""
    if value is None:
        return ()
    items: list[object]
    if isinstance(value, list):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    else:
        items = [value]
    ids: dict[int, None] = {}
    for item in items:
        number = _as_int(item)
        if number is None or number <= 0:
            raise WeComProtocolError("user/get", "department is not a list of department ids")
        ids.setdefault(number, None)
    return tuple(ids)


def _avatar(body: Mapping[str, Any]) -> str:
    for key in ("avatar", "thumb_avatar"):
        value = body.get(key)
        if (
            isinstance(value, str)
            and value.startswith(("https://", "http://"))
            and len(value) <= 1024
            and not any(c.isspace() or not c.isprintable() for c in value)
        ):
            return value
    return ""


def _member(body: Mapping[str, Any]) -> Member:
    userid = _text(body, "userid", "UserId")
    if userid is None or not _USERID_RE.fullmatch(userid):
        raise WeComProtocolError("user/get", "userid is missing or not a WeCom userid")
    # Name and avatar are shown, never decided on: an odd one is dropped, not fatal.
    name = _text(body, "name") or ""
    status = _int_field("user/get", body, "status")
    return Member(
        userid=userid,
        name=name,
        departments=_department_ids(body.get("department")),
        status=status,
        avatar=_avatar(body),
    )


def _departments(body: Mapping[str, Any]) -> list[Department]:
    entries = body.get("department")
    if not isinstance(entries, list):
        raise WeComProtocolError("department/list", "department is not a list")
    found: dict[int, Department] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise WeComProtocolError("department/list", "a department is not an object")
        dept_id = _as_int(entry.get("id"))
        if dept_id is None or dept_id <= 0:
            raise WeComProtocolError("department/list", "a department's id is not a number")
        parentid = _as_int(entry.get("parentid") or 0)
        if parentid is None or parentid < 0:
            raise WeComProtocolError("department/list", "a department's parentid is not a number")
        name = entry.get("name")
        found.setdefault(
            dept_id, Department(dept_id, name if isinstance(name, str) else "", parentid)
        )
    return list(found.values())


def _log_failure(exc: WeComError) -> None:
    if isinstance(exc, MemberNotVisible):
        # Someone the app is not for: a refusal the audit trail records, not trouble.
        logger.info("%s (errmsg %r)", exc, exc.errmsg)
    elif isinstance(exc, WeComAPIError):
        logger.warning("%s (errmsg %r)", exc, exc.errmsg)
    else:
        logger.warning("%s", exc)
