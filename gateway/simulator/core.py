"""The simulator's state: apps, users, codes, tokens, QR tickets, faults and the call log.

Everything here is plain Python behind one lock, with no HTTP in it, so the WSGI layer
(``gateway.simulator.app``) and in-process tests drive the same rules. API methods return
the JSON object WeChat would send, success or ``{"errcode": ...}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol, get_args
from urllib.parse import urlencode, urlsplit

from gateway.simulator.wire import error_payload

AppKind = Literal["website", "official_account"]
Endpoint = Literal["access_token", "refresh_token", "auth", "userinfo"]
FaultMode = Literal["errcode", "http_status", "garbage", "delay", "reset"]
TicketStatus = Literal["waiting", "scanned", "confirmed", "cancelled", "expired"]

ENDPOINTS: Final[tuple[Endpoint, ...]] = get_args(Endpoint)
FAULT_MODES: Final[tuple[FaultMode, ...]] = get_args(FaultMode)
SCOPES: Final[Mapping[AppKind, frozenset[str]]] = {
    "website": frozenset({"snsapi_login"}),
    "official_account": frozenset({"snsapi_base", "snsapi_userinfo"}),
}
# How long a QR code (or a pending in-WeChat consent) can be acted on.
TICKET_TTL: Final = 300.0
# The call log is for tests and the demo, not an audit trail: keep the recent past only.
_MAX_CALLS: Final = 1000
# Past this many live entries, expired codes, tokens and tickets are swept on the next mint.
_SWEEP_AT: Final = 1000
_SECRET_PARAMS: Final = frozenset({"secret", "code", "access_token", "refresh_token"})


@dataclass(frozen=True, slots=True)
class SimApp:
    """An app registered with the simulated WeChat.

    ``callback_domain``, when set, is the only host ``redirect_uri`` may point at, as with
    WeChat's "authorization callback domain"; ``None`` accepts any host.
    """

    app_id: str
    app_secret: str = field(repr=False)
    kind: AppKind
    unionid_bound: bool = True
    callback_domain: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCOPES:
            raise ValueError(f"kind must be one of {', '.join(SCOPES)}")


@dataclass(frozen=True, slots=True)
class SimUser:
    """A WeChat user. ``key`` is a stable name (``alice``) used by tests and pages.

    A ``snapshot`` user stands for WeChat's snapshot mode: token replies carry
    ``is_snapshotuser: 1`` and no unionid.
    """

    key: str
    nickname: str
    avatar: str
    snapshot: bool = False


class _FaultFields(Protocol):
    @property
    def endpoint(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def errcode(self) -> int: ...
    @property
    def status(self) -> int: ...
    @property
    def delay(self) -> float: ...
    @property
    def body(self) -> str | None: ...
    @property
    def times(self) -> int: ...


def check_fault(fault: _FaultFields, endpoints: Iterable[str], modes: Iterable[str]) -> None:
    """A fault's fields, checked: faults arrive as JSON from the control API, so the
    annotations are not enough. Shared by the WeChat and the WeCom simulator."""
    numbers = (fault.errcode, fault.status, fault.times)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise ValueError("errcode, status and times must be integers")
    if isinstance(fault.delay, bool) or not isinstance(fault.delay, int | float):
        raise ValueError("delay must be a number of seconds")
    if fault.body is not None and not isinstance(fault.body, str):
        raise ValueError("body must be a string")
    endpoints, modes = tuple(endpoints), tuple(modes)
    if fault.endpoint != "*" and fault.endpoint not in endpoints:
        raise ValueError(f"endpoint must be one of {', '.join(endpoints)} or *")
    if fault.mode not in modes:
        raise ValueError(f"mode must be one of {', '.join(modes)}")
    if fault.times < 1:
        raise ValueError("times must be at least 1")
    if fault.delay < 0 or not 100 <= fault.status <= 599:
        raise ValueError("delay must be >= 0 and status a valid HTTP status")


@dataclass(slots=True)
class Fault:
    """A failure injected into the next ``times`` calls of ``endpoint`` (``*``: any).

    ``errcode``: answer ``{"errcode": errcode}`` without doing anything.
    ``http_status``: answer ``status`` with an HTML error page.
    ``garbage``: answer 200 with ``body`` (default: an HTML page) instead of JSON.
    ``delay``: handle the call normally (a code is spent), then wait ``delay`` seconds.
    ``reset``: drop the connection without any reply.
    """

    endpoint: Endpoint | Literal["*"]
    mode: FaultMode
    errcode: int = -1
    status: int = 503
    delay: float = 1.0
    body: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        check_fault(self, ENDPOINTS, FAULT_MODES)


@dataclass(frozen=True, slots=True)
class Call:
    """One API call received. Secret parameters are replaced by ``<redacted>``.

    ``outcome`` is the errcode answered (0 for success) or the fault mode applied.
    """

    endpoint: Endpoint
    params: Mapping[str, str]
    outcome: int | str
    at: float


@dataclass(slots=True)
class _Code:
    app_id: str
    user: str
    scope: str
    expires: float
    used: bool = False


@dataclass(slots=True)
class _Token:
    app_id: str
    user: str
    scope: str
    expires: float
    revoked: bool = False


@dataclass(slots=True)
class Ticket:
    """A pending authorization: a QR code on a desktop, or an in-WeChat consent page."""

    app_id: str
    redirect_uri: str
    state: str
    scope: str
    expires: float
    status: TicketStatus = "waiting"
    redirect: str | None = None


class TicketGone(Exception):
    """The ticket is unknown, expired or already used."""


def callback_url(redirect_uri: str, params: Mapping[str, str]) -> str:
    """Append ``params`` to ``redirect_uri`` the way WeChat does (``&`` if it has a query)."""
    base, hash_mark, fragment = redirect_uri.partition("#")
    joiner = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    return f"{base}{joiner}{urlencode(params)}{hash_mark}{fragment}"


class SimState:
    """The simulated WeChat's memory. Every method that touches mutable state holds one lock."""

    def __init__(
        self,
        apps: Sequence[SimApp],
        users: Sequence[SimUser],
        *,
        code_ttl_website: float,
        code_ttl_oa: float,
        token_ttl: int,
        refresh_ttl: float,
        clock: Callable[[], float],
        seed: bytes,
    ) -> None:
        self.apps: Mapping[str, SimApp] = {app.app_id: app for app in apps}
        self.users: Mapping[str, SimUser] = {user.key: user for user in users}
        if len(self.apps) != len(apps) or len(self.users) != len(users):
            raise ValueError("app ids and user keys must be unique")
        self._code_ttl: Mapping[AppKind, float] = {
            "website": code_ttl_website,
            "official_account": code_ttl_oa,
        }
        self._token_ttl = token_ttl
        self._refresh_ttl = refresh_ttl
        self._clock = clock
        self._seed = seed
        self._lock = threading.Lock()
        self._offset = 0.0
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._tickets: dict[str, Ticket] = {}
        self._faults: list[Fault] = []
        self._calls: deque[Call] = deque(maxlen=_MAX_CALLS)

    # -- identities --

    def openid(self, app_id: str, user: str) -> str:
        """28 characters starting with ``o``, stable per (app, user), like WeChat's."""
        return "o" + self._derive(f"openid:{app_id}:{user}")

    def unionid(self, user: str) -> str:
        return "o" + self._derive(f"unionid:{user}")

    def _derive(self, label: str) -> str:
        digest = hmac.new(self._seed, label.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:27]

    def now(self) -> float:
        return self._clock() + self._offset

    # -- control --

    def advance_clock(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            # A copy: the caller's object must not count down as the fault is used.
            self._faults.append(replace(fault))

    def faults(self) -> list[Fault]:
        with self._lock:
            return [replace(fault) for fault in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, endpoint: Endpoint) -> Fault | None:
        """The first fault matching ``endpoint``, counting one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in ("*", endpoint):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def record_call(
        self, endpoint: Endpoint, params: Mapping[str, str], outcome: int | str
    ) -> None:
        redacted = {k: "<redacted>" if k in _SECRET_PARAMS else v for k, v in params.items()}
        with self._lock:
            self._calls.append(Call(endpoint, redacted, outcome, self.now()))

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def revoke(self, user: str) -> None:
        """The user withdrew the authorization (or changed password): tokens stop working."""
        if user not in self.users:
            raise KeyError(user)
        with self._lock:
            for token in (*self._access.values(), *self._refresh.values()):
                if token.user == user:
                    token.revoked = True

    def reset(self) -> None:
        """Forget everything issued, every fault, the call log and the clock offset."""
        with self._lock:
            self._offset = 0.0
            for store in (self._codes, self._access, self._refresh, self._tickets):
                store.clear()
            self._faults.clear()
            self._calls.clear()

    def mint_code(self, app_id: str, user: str, scope: str | None = None) -> str:
        """Issue a code as if ``user`` had just authorized ``app_id``."""
        app = self.apps.get(app_id)
        if app is None:
            raise ValueError(f"unknown app {app_id!r}")
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}")
        allowed = SCOPES[app.kind]
        if scope is None:
            scope = "snsapi_login" if app.kind == "website" else "snsapi_userinfo"
        if scope not in allowed:
            raise ValueError(f"scope must be one of {', '.join(sorted(allowed))} for this app")
        with self._lock:
            return self._mint_code(app, user, scope)

    def _mint_code(self, app: SimApp, user: str, scope: str) -> str:
        now = self.now()
        self._sweep(now)
        code = secrets.token_hex(16)
        self._codes[code] = _Code(app.app_id, user, scope, now + self._code_ttl[app.kind])
        return code

    def _sweep(self, now: float) -> None:
        # Spent and expired entries are kept while few, so late replays still get the
        # precise errcode (40163, 42003, 42002) instead of a generic "invalid".
        if len(self._codes) > _SWEEP_AT:
            self._codes = {k: v for k, v in self._codes.items() if v.expires > now}
        if len(self._access) > _SWEEP_AT:
            self._access = {k: v for k, v in self._access.items() if v.expires > now}
        if len(self._refresh) > _SWEEP_AT:
            self._refresh = {k: v for k, v in self._refresh.items() if v.expires > now}
        if len(self._tickets) > _SWEEP_AT:
            self._tickets = {k: v for k, v in self._tickets.items() if v.expires > now}

    # -- browser flows --

    def open_ticket(self, app_id: str, redirect_uri: str, state: str, scope: str) -> str:
        with self._lock:
            now = self.now()
            self._sweep(now)
            ticket_id = secrets.token_urlsafe(16)
            self._tickets[ticket_id] = Ticket(app_id, redirect_uri, state, scope, now + TICKET_TTL)
            return ticket_id

    def mark_scanned(self, ticket_id: str) -> str:
        """The phone opened the QR link: the desktop page shows "scanned". Returns the app id."""
        with self._lock:
            ticket = self._open_ticket(ticket_id)
            ticket.status = "scanned"
            return ticket.app_id

    def confirm(self, ticket_id: str, user: str) -> str:
        """The user authorized: spend the ticket, mint a code, return the callback URL."""
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}")
        with self._lock:
            ticket = self._open_ticket(ticket_id)
            code = self._mint_code(self.apps[ticket.app_id], user, ticket.scope)
            ticket.status = "confirmed"
            ticket.redirect = callback_url(
                ticket.redirect_uri, {"code": code, "state": ticket.state}
            )
            return ticket.redirect

    def cancel(self, ticket_id: str) -> str:
        """The user declined: spend the ticket, return the callback URL with state only."""
        with self._lock:
            ticket = self._open_ticket(ticket_id)
            ticket.status = "cancelled"
            ticket.redirect = callback_url(ticket.redirect_uri, {"state": ticket.state})
            return ticket.redirect

    def poll(self, ticket_id: str) -> tuple[TicketStatus, str | None]:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None or ticket.expires <= self.now():
                return "expired", None
            return ticket.status, ticket.redirect

    def _live_ticket(self, ticket_id: str) -> Ticket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None or ticket.expires <= self.now():
            raise TicketGone(ticket_id)
        return ticket

    def _open_ticket(self, ticket_id: str) -> Ticket:
        ticket = self._live_ticket(ticket_id)
        if ticket.status not in ("waiting", "scanned"):
            raise TicketGone(ticket_id)
        return ticket

    # -- API --

    def _known_app(self, params: Mapping[str, str]) -> SimApp | dict[str, object]:
        """The app named by ``appid``, or WeChat's error for a missing or unknown one."""
        app_id = params.get("appid", "")
        if not app_id:
            return error_payload(41002)
        return self.apps.get(app_id) or error_payload(40013)

    def _mint_access(self, app_id: str, user: str, scope: str, now: float) -> str:
        access = secrets.token_urlsafe(64)
        self._access[access] = _Token(app_id, user, scope, now + self._token_ttl)
        return access

    def access_token(self, params: Mapping[str, str]) -> dict[str, object]:
        with self._lock:
            app = self._known_app(params)
            if not isinstance(app, SimApp):
                return app
            app_id = app.app_id
            secret = params.get("secret", "")
            if not secret:
                return error_payload(41004)
            if not hmac.compare_digest(secret.encode(), app.app_secret.encode()):
                return error_payload(40125)
            if params.get("grant_type") != "authorization_code":
                return error_payload(40002)
            code = params.get("code", "")
            if not code:
                return error_payload(41008)
            grant = self._codes.get(code)
            if grant is None or grant.app_id != app_id:
                return error_payload(40029)
            if grant.used:
                return error_payload(40163)
            now = self.now()
            if grant.expires <= now:
                return error_payload(42003)
            grant.used = True
            access = self._mint_access(app_id, grant.user, grant.scope, now)
            refresh = secrets.token_urlsafe(64)
            self._refresh[refresh] = _Token(
                app_id, grant.user, grant.scope, now + self._refresh_ttl
            )
            return self._token_payload(app, grant.user, grant.scope, access, refresh)

    def refresh_token(self, params: Mapping[str, str]) -> dict[str, object]:
        with self._lock:
            app = self._known_app(params)
            if not isinstance(app, SimApp):
                return app
            app_id = app.app_id
            if params.get("grant_type") != "refresh_token":
                return error_payload(40002)
            refresh = params.get("refresh_token", "")
            if not refresh:
                return error_payload(41003)
            token = self._refresh.get(refresh)
            if token is None or token.app_id != app_id:
                return error_payload(40030)
            if token.revoked:
                return error_payload(42007)
            now = self.now()
            if token.expires <= now:
                return error_payload(42002)
            access = self._mint_access(app_id, token.user, token.scope, now)
            return self._token_payload(app, token.user, token.scope, access, refresh)

    def auth(self, params: Mapping[str, str]) -> dict[str, object]:
        with self._lock:
            failure = self._check_access(params)
            return failure if failure is not None else {"errcode": 0, "errmsg": "ok"}

    def userinfo(self, params: Mapping[str, str]) -> dict[str, object]:
        with self._lock:
            failure = self._check_access(params)
            if failure is not None:
                return failure
            token = self._access[params["access_token"]]
            if token.scope == "snsapi_base":
                return error_payload(48001)
            app = self.apps[token.app_id]
            user = self.users[token.user]
            payload: dict[str, object] = {
                "openid": self.openid(app.app_id, user.key),
                "nickname": user.nickname,
                "sex": 0,
                "language": "",
                "city": "",
                "province": "",
                "country": "",
                "headimgurl": user.avatar,
                "privilege": [],
            }
            if app.unionid_bound and not user.snapshot:
                payload["unionid"] = self.unionid(user.key)
            return payload

    def _check_access(self, params: Mapping[str, str]) -> dict[str, object] | None:
        access = params.get("access_token", "")
        if not access:
            return error_payload(41001)
        token = self._access.get(access)
        if token is None:
            return error_payload(40001)
        if token.revoked or token.expires <= self.now():
            return error_payload(42001)
        openid = params.get("openid", "")
        if not openid:
            return error_payload(41009)
        if openid != self.openid(token.app_id, token.user):
            return error_payload(40003)
        return None

    def _token_payload(
        self, app: SimApp, user_key: str, scope: str, access: str, refresh: str
    ) -> dict[str, object]:
        user = self.users[user_key]
        payload: dict[str, object] = {
            "access_token": access,
            "expires_in": self._token_ttl,
            "refresh_token": refresh,
            "openid": self.openid(app.app_id, user_key),
            "scope": scope,
        }
        if user.snapshot:
            payload["is_snapshotuser"] = 1
        elif app.unionid_bound:
            payload["unionid"] = self.unionid(user_key)
        return payload
