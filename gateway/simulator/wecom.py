"""A WeCom (企业微信) simulator that behaves like the real service on the wire.

It stands in for ``qyapi.weixin.qq.com`` (the ``/cgi-bin/`` API),
``login.work.weixin.qq.com`` (the web login), ``open.work.weixin.qq.com`` (the legacy QR
page) and the in-app authorization on ``open.weixin.qq.com``, so one base URL serves as
``api_base``, ``login_base``, ``qrconnect_base`` and ``open_base``. It is a Werkzeug WSGI
app; ``WeComSimulatorServer`` runs it on a loopback socket. With ``fallback`` (e.g. the
WeChat ``Simulator``) it answers only its own paths and hands every other request to the
fallback, so one port can simulate both. Never expose it: the control API has no
authentication and minting codes is its whole point.

Usage::

    from gateway.simulator.wecom import WeComSimulator, WeComSimulatorServer
    with WeComSimulatorServer(WeComSimulator.default()) as server:
        ...  # point wecom.api_base, login_base, qrconnect_base and open_base at server.url

The directory: corps (``WeComCorp``) with self-built apps (``WeComApp``: agent id, secret,
trusted domains ``host[:port]``, visibility scope, enabled, created after 2022-06-20,
trusted IPs), departments (root id 1), members (``WeComMember``: userid with its case,
compared case-insensitively; name; departments in WeCom's order; status 1 active,
2 disabled, 4 not activated, 5 left) and non-members (``WeComGuest``: an openid only).
A member is visible to an app when named in its ``visible_users`` or in a department at
or below one of its ``visible_departments``.

Browser pages (HTML, HTTP 200 for WeCom's own refusals; the language is ``?lang=`` zh/en,
then ``Accept-Language``, then Chinese)
    ``GET /wwlogin/sso/login`` (also ``/wwlogin/sso/login/``)
    ``?login_type=CorpApp&appid=CORPID&agentid=N&redirect_uri=&state=[&lang=]``
        The new web login: a QR code for the phone page and a link per test person
        (members with their status and visibility shown, then non-members), plus "deny".
        A pick 302-redirects to ``redirect_uri?code=CODE&state=STATE``: **no** ``appid``
        (the reference leaves it UNVERIFIED; the legacy page adds it, so a client must
        tolerate both). Deny (UNVERIFIED) redirects with ``state`` only. Refusals: an
        untrusted ``redirect_uri`` host "redirect_uri 与配置的授权完成回调域名不一致"; bad
        parameters "请求参数错误"; a disabled app "应用已停用". A member outside the app's
        visibility gets "无权限" and no callback (the login stays open for someone else).
        Disabled and not-activated members *can* pick here, unlike in real WeCom, so the
        client's own status check can be tested. ``state`` is passed back as given (no
        rule is documented for the web logins).
    ``GET /wwopen/sso/qrConnect?appid=CORPID&agentid=N&redirect_uri=&state=[&lang=]``
        The legacy QR page: the same choice; success adds ``appid=CORPID`` after
        ``code`` and ``state``; deny sends ``state`` only; any bad parameter, a disabled
        app or an untrusted host give "该链接无法访问". ``login_type=jssdk`` (the legacy
        ``wwLogin.js`` iframe) makes the links send the top window.
    ``GET /connect/oauth2/authorize?appid=CORPID&redirect_uri=&response_type=code&scope=
    &state=[&agentid=N]``
        In-app authorization. The User-Agent must contain ``wxwork`` (any case), else an
        "open in WeCom" page. Who uses the client comes from ``sim_user=USERID`` (or a
        non-member's key) in the query or the ``wecom_sim_user`` cookie, else a chooser
        page. ``snsapi_base`` (and ``snsapi_userinfo``, and ``snsapi_privateinfo`` without
        ``agentid``) 302-redirects at once, for members outside visibility too;
        ``snsapi_privateinfo`` shows a consent page (outside visibility: "无权限").
        ``code`` and ``state`` are appended to the existing query with ``&``, before any
        fragment, ``state=`` even when empty. ``state`` must match ``[A-Za-z0-9]{0,128}``
        (else errcode 84025). An untrusted host (of the ``agentid``'s app, or of every
        enabled app without one) redirects to ``/wwopen/uriconfirm?err_type=domain_err&
        uri=...``, which says "redirect_uri需使用应用可信域名".
    ``/wwopen/sim/pick/<login>?user=KEY|deny=1``, ``/wwopen/sim/scan/<login>`` (the phone
    page the QR code points at; POST confirms) and ``/wwopen/sim/poll/<login>`` (``{"status":
    waiting|scanned|confirmed|denied|expired, "redirect"}``, polled by the QR page) are the
    simulator's own. ``sim_user=KEY`` on the two login pages picks at once.

Codes are 43 characters of ``[A-Za-z0-9_-]``, single use, valid 300 s, bound to (corp,
agent, redirect host, scope, person); any app of the corp that trusts the code's redirect
host may redeem it (another app: 50001, another corp: 40029).

API (always HTTP 200, ``application/json; charset=UTF-8``, valid JSON with raw UTF-8;
success bodies start ``"errcode":0,"errmsg":"ok"``; every errmsg ends with
``, hint: [<25 digits>], from ip: <ip>, more info at
https://open.work.weixin.qq.com/devtool/query?e=<N>``; list endpoints' errors carry their
list key as ``[]``)
    ``gettoken?corpid&corpsecret``  41002/40013 corpid, 41004/40001 secret (counted per IP;
        with ``ban_after`` that many wrong secrets ban the IP for an hour: 45009, a guess),
        50003 disabled app. A fresh 7200 s token per call (``reuse_tokens=True``: the same
        one while valid). Not checked against trusted IPs.
    Every other endpoint checks ``access_token``: missing 41001, unknown 40014, expired
        42001 (``expired_errcode`` switches it to 40014), invalidated early 40014, app
        disabled since 50003, caller's IP not in the app's ``trusted_ips`` 60020.
    ``auth/getuserinfo?access_token&code``  41008 no code, 40029 unknown/used/expired or
        another corp's code, 50001 the code's redirect host is not trusted by the token's
        app. Member: ``userid`` (plus ``user_ticket`` for ``snsapi_privateinfo`` and a
        visible member); non-member: ``openid`` (plus ``external_userid`` for customers).
    ``user/getuserinfo``  the same with the legacy CamelCase keys first: ``UserId`` or
        ``OpenId``, ``DeviceId`` ("" for web-login codes), privateinfo ``user_ticket`` and
        ``expires_in: 7200``, then ``errcode``/``errmsg``.
    ``auth/getuserdetail`` (POST ``{"user_ticket"}``)  47001 "Warning: wrong json format.",
        84015 unknown ticket, 84014 expired (1800 s), 60011 not visible; gender as a string.
    ``user/get?userid``  41009 missing, 60111 unknown (case-insensitive lookup, userid sent
        back in its own case), 60011 outside visibility (errmsg with its trailing space);
        ``department`` lists the visible departments only; ``status`` an int; apps created
        after 2022-06-20 get no avatar, thumb_avatar, gender, mobile, email, biz_mail,
        qr_code, address (the keys are absent).
    ``department/list[?id]``  the visible departments at and below ``id`` (all visible
        ones without it), pre-order, siblings by ``order`` descending; 60003 unknown (or
        not a number), 60011 not visible. ``department/simplelist`` (``department_id``)
        and ``department/get?id`` (``department``) likewise.

Control API (JSON over HTTP under ``/_sim/wecom/``, each mirrored by a method)
    ``faults`` POST ``{"endpoint": "gettoken"|"auth_getuserinfo"|"user_getuserinfo"|
        "auth_getuserdetail"|"user_get"|"department_list"|"department_simplelist"|
        "department_get"|"*", "mode": "errcode"|"http_status"|"garbage"|"delay"|"hang"|
        "reset", "errcode", "status", "delay", "body", "times"}`` (see ``WeComFault``);
        GET lists, DELETE clears (and releases hung calls).
    ``calls[?endpoint=]`` GET ``{"calls": [{"endpoint", "params", "outcome", "at", "ip"}]}``
        with corpsecret, code, access_token and user_ticket as ``<redacted>``; DELETE.
    ``clock`` POST ``{"advance": seconds}``.
    ``invalidate`` POST ``{"agent_id", "corp_id"?}``: that app's tokens answer 40014.
    ``code`` POST ``{"user", "redirect_uri", "agent_id"?, "scope"?, "corp_id"?}`` ->
        ``{"code"}``: a code without a browser.
    ``member`` POST ``{"userid", "corp_id"?, "status"?, "name"?, "departments"?, ...}`` or
        ``{"userid", "remove": true}``.
    ``app`` POST ``{"agent_id", "corp_id"?, "enabled"?, "trusted_domains"?,
        "visible_departments"?, "visible_users"?, "trusted_ips"?}``.
    ``directory`` GET: corps, apps (no secrets), departments, members, non-members with
        openids. ``release`` POST: hung calls drop now. ``reset`` POST: forget codes,
        tokens, logins, faults, calls, bans and the clock offset, and restore the
        directory as constructed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, cast, get_args
from urllib.parse import quote, urlencode, urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.urls import iri_to_uri
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from gateway.simulator import wecom_pages as pages
from gateway.simulator.core import check_fault
from gateway.simulator.server import Served
from gateway.web.i18n import Lang, negotiate_lang

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

WeComEndpoint = Literal[
    "gettoken",
    "auth_getuserinfo",
    "user_getuserinfo",
    "auth_getuserdetail",
    "user_get",
    "department_list",
    "department_simplelist",
    "department_get",
]
WeComFaultMode = Literal["errcode", "http_status", "garbage", "delay", "hang", "reset"]
CodeScope = Literal["web", "snsapi_base", "snsapi_privateinfo"]
LoginStatus = Literal["waiting", "scanned", "confirmed", "denied", "expired"]
_LoginKind = Literal["sso", "qrconnect", "oauth2"]

ENDPOINTS: Final[tuple[WeComEndpoint, ...]] = get_args(WeComEndpoint)
FAULT_MODES: Final[tuple[WeComFaultMode, ...]] = get_args(WeComFaultMode)
CONTENT_TYPE: Final = "application/json; charset=UTF-8"
#: ``Simulator.default()``'s corp and its apps.
DEMO_CORP_ID: Final = "ww7c1a5e2f9b3d8064"
DEMO_AGENT_ID: Final = 1000002
DEMO_LEGACY_AGENT_ID: Final = 1000003
DEMO_DISABLED_AGENT_ID: Final = 1000004
#: The cookie (or query parameter ``sim_user``) naming who uses the simulated WeCom client.
SESSION_COOKIE: Final = "wecom_sim_user"

_STATUSES: Final = frozenset({1, 2, 4, 5})
_USERID_RE: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z_\-@.]{0,63}")
_CORP_ID_RE: Final = re.compile(r"ww[0-9a-z]{16}")
_STATE_RE: Final = re.compile(r"[A-Za-z0-9]{0,128}")
_DOMAIN_RE: Final = re.compile(r"(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
#: Fields apps created from 2022-06-20 on no longer get from ``user/get``.
_DROPPED_FIELDS: Final = frozenset(
    {"avatar", "thumb_avatar", "gender", "mobile", "email", "biz_mail", "qr_code", "address"}
)
_SECRET_PARAMS: Final = frozenset({"corpsecret", "code", "access_token", "user_ticket"})
_API_PATHS: Final[Mapping[str, WeComEndpoint]] = {
    "/cgi-bin/gettoken": "gettoken",
    "/cgi-bin/auth/getuserinfo": "auth_getuserinfo",
    "/cgi-bin/user/getuserinfo": "user_getuserinfo",
    "/cgi-bin/auth/getuserdetail": "auth_getuserdetail",
    "/cgi-bin/user/get": "user_get",
    "/cgi-bin/department/list": "department_list",
    "/cgi-bin/department/simplelist": "department_simplelist",
    "/cgi-bin/department/get": "department_get",
}
_LIST_KEYS: Final[Mapping[WeComEndpoint, str]] = {
    "department_list": "department",
    "department_simplelist": "department_id",
}
#: Paths this simulator answers when it has a fallback (``/connect/oauth2/authorize`` too,
#: when its ``appid`` is one of the corps: WeChat's Official Account flow shares the path).
_OWN_PREFIXES: Final = ("/cgi-bin/", "/wwlogin/", "/wwopen/", "/_sim/wecom/")
_OAUTH2_PATH: Final = "/connect/oauth2/authorize"
_GARBAGE: Final = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
_MAX_CALLS: Final = 1000
_SWEEP_AT: Final = 1000
_LOGIN_TTL: Final = 300.0
_BAN_SECONDS: Final = 3600.0
_LEGACY_TICKET_EXPIRES_IN: Final = 7200

# WeCom's wording, before the hint suffix. Clients must branch on errcode, never on this.
_ERRMSGS: Final[Mapping[int, str]] = {
    -1: "system busy",
    40001: "invalid credential",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40029: "invalid code",
    40056: "invalid agentid",
    40091: "secret is invalid",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41008: "missing code",
    41009: "missing userid",
    42001: "access_token expired",
    42003: "code expired",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "Warning: wrong json format. data format error",
    48002: "api forbidden",
    50001: "redirect_uri unauthorized",
    50003: "application is disabled",
    60003: "department not found",
    60011: "no privilege to access/modify contact/party/agent ",
    60020: "not allow to access from your ip",
    60021: "userid not in the visible range of the app",
    60111: "userid not found",
    84014: "user ticket expired",
    84015: "invalid user ticket",
    84025: "invalid state",
    301002: "not allow operate another agent with this accesstoken.",
}


# -- the directory ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeComDepartment:
    """A department. The root has id 1 and ``parentid`` 0; a larger ``order`` sorts first."""

    id: int
    name: str
    parentid: int = 1
    name_en: str = ""
    order: int = 100000000
    leaders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WeComMember:
    """A member of the corp. ``departments`` keep WeCom's order (not sorted); ``gender`` is
    WeCom's string ("0" unknown, "1" male, "2" female); ``status`` 1 active, 2 disabled,
    4 not activated, 5 left."""

    userid: str
    name: str
    departments: tuple[int, ...]
    status: int = 1
    gender: str = "0"
    avatar: str = ""
    position: str = ""
    mobile: str = ""
    email: str = ""
    biz_mail: str = ""
    alias: str = ""
    telephone: str = ""
    address: str = ""
    leader_in: tuple[int, ...] = ()
    direct_leader: tuple[str, ...] = ()
    main_department: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.userid, str) or not _USERID_RE.fullmatch(self.userid):
            raise ValueError(f"userid must match {_USERID_RE.pattern}: {self.userid!r}")
        if isinstance(self.status, bool) or self.status not in _STATUSES:
            raise ValueError("status must be 1, 2, 4 or 5")
        if self.gender not in ("0", "1", "2"):
            raise ValueError('gender must be "0", "1" or "2"')
        if not isinstance(self.name, str):
            raise ValueError("name must be a string")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in self.departments):
            raise ValueError("departments must be department ids")

    @property
    def thumb_avatar(self) -> str:
        return self.avatar[:-2] + "/100" if self.avatar.endswith("/0") else self.avatar


@dataclass(frozen=True, slots=True)
class WeComGuest:
    """Someone who is not a member: WeCom knows them by a corp-scoped openid only.
    ``customer``: an external contact of the corp, who also has an ``external_userid``."""

    key: str
    name: str
    customer: bool = False


@dataclass(frozen=True, slots=True)
class WeComApp:
    """A self-built app ("自建应用").

    ``trusted_domains`` are ``host[:port]`` entries (no scheme, no wildcard; the port must
    match), standing for both the web login's callback domain and the in-app trusted
    domain. ``trusted_ips``: ``None`` checks nothing, else API calls from elsewhere get
    60020 (gettoken is never checked).
    """

    agent_id: int
    secret: str = field(repr=False)
    name: str = ""
    trusted_domains: tuple[str, ...] = ()
    visible_departments: tuple[int, ...] = (1,)
    visible_users: tuple[str, ...] = ()
    enabled: bool = True
    created_after_2022_06_20: bool = True
    trusted_ips: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.agent_id, bool) or not isinstance(self.agent_id, int):
            raise ValueError("agent_id must be an integer")
        if not isinstance(self.secret, str) or not self.secret:
            raise ValueError("secret must be a non-empty string")
        for domain in self.trusted_domains:
            if not isinstance(domain, str) or not _DOMAIN_RE.fullmatch(domain.lower()):
                raise ValueError(f"trusted domains are host[:port]: {domain!r}")
        if not all(isinstance(d, int) for d in self.visible_departments):
            raise ValueError("visible_departments must be department ids")
        if not all(isinstance(u, str) for u in self.visible_users):
            raise ValueError("visible_users must be userids")
        if self.trusted_ips is not None and not all(isinstance(i, str) for i in self.trusted_ips):
            raise ValueError("trusted_ips must be addresses")

    def trusts(self, host: str) -> bool:
        return host.lower() in {domain.lower() for domain in self.trusted_domains}


@dataclass(frozen=True, slots=True)
class WeComCorp:
    """A corp: its id (``ww`` and 16 lowercase hex or letters), apps, departments
    (including the root, id 1), members and non-members."""

    corp_id: str
    name: str
    apps: tuple[WeComApp, ...]
    departments: tuple[WeComDepartment, ...]
    members: tuple[WeComMember, ...]
    guests: tuple[WeComGuest, ...] = ()


# -- faults and the call log ----------------------------------------------------------------


@dataclass(slots=True)
class WeComFault:
    """A failure injected into the next ``times`` calls of ``endpoint`` (``*``: any).

    ``errcode``: answer WeCom's error ``errcode`` (with the hint suffix) without doing
    anything. ``http_status``: answer ``status`` with an HTML page. ``garbage``: answer 200
    with ``body`` (default: an HTML page) instead of JSON. ``delay``: handle the call
    normally (a code is spent), then wait ``delay`` seconds before answering. ``hang``:
    no answer at all; the connection is dropped after ``delay`` seconds, or at once on
    ``release_hangs()``, ``clear_faults()`` or ``reset()``. ``reset``: drop the connection
    at once.
    """

    endpoint: WeComEndpoint | Literal["*"]
    mode: WeComFaultMode
    errcode: int = -1
    status: int = 503
    delay: float = 1.0
    body: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        check_fault(self, ENDPOINTS, FAULT_MODES)


@dataclass(frozen=True, slots=True)
class WeComCall:
    """One API call received; secrets, codes, tokens and tickets read ``<redacted>``.
    ``outcome`` is the errcode answered (0 for success) or the fault mode applied."""

    endpoint: WeComEndpoint
    params: Mapping[str, str]
    outcome: int | str
    at: float
    ip: str


# -- internal records -------------------------------------------------------------------------


@dataclass(slots=True)
class _Token:
    corp_id: str
    agent_id: int
    expires: float
    revoked: bool = False


@dataclass(slots=True)
class _Code:
    corp_id: str
    agent_id: int | None
    host: str
    scope: CodeScope
    person: str
    member: bool
    device_id: str
    expires: float
    used: bool = False


@dataclass(slots=True)
class _UserTicket:
    corp_id: str
    agent_id: int
    userid: str
    expires: float


@dataclass(slots=True)
class _Login:
    kind: _LoginKind
    corp_id: str
    agent_id: int | None
    redirect_uri: str
    host: str
    state: str
    scope: CodeScope
    expires: float
    person: str | None = None
    status: LoginStatus = "waiting"
    redirect: str | None = None


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """What an API handler reads: the query (and form) parameters, the caller's address,
    and the raw body (``auth/getuserdetail``)."""

    params: Mapping[str, str]
    ip: str
    body: bytes = b""


class LoginGone(Exception):
    """The login is unknown, expired or already finished."""


class NoPrivilege(Exception):
    """The member is outside the app's visibility scope."""


class UnknownPerson(LookupError):
    """No member or non-member of that corp has this key."""


class _Directory:
    """One corp's mutable view: apps and members can change while the simulator runs."""

    def __init__(self, corp: WeComCorp) -> None:
        if not _CORP_ID_RE.fullmatch(corp.corp_id):
            raise ValueError(f"corp_id must match {_CORP_ID_RE.pattern}: {corp.corp_id!r}")
        self.corp_id = corp.corp_id
        self.name = corp.name
        self.apps: dict[int, WeComApp] = {app.agent_id: app for app in corp.apps}
        self.departments: dict[int, WeComDepartment] = {d.id: d for d in corp.departments}
        self.members: dict[str, WeComMember] = {m.userid.lower(): m for m in corp.members}
        self.guests: dict[str, WeComGuest] = {g.key: g for g in corp.guests}
        if len(self.apps) != len(corp.apps) or len(self.departments) != len(corp.departments):
            raise ValueError("agent ids and department ids must be unique")
        if len(self.members) != len(corp.members) or len(self.guests) != len(corp.guests):
            raise ValueError("userids (in any case) and non-member keys must be unique")
        if set(self.members) & {key.lower() for key in self.guests}:
            raise ValueError("a non-member key must not be a member's userid")
        root = self.departments.get(1)
        if root is None or root.parentid != 0:
            raise ValueError("the root department has id 1 and parentid 0")
        for dept in corp.departments:
            if dept.id != 1 and dept.parentid not in self.departments:
                raise ValueError(f"department {dept.id}: unknown parent {dept.parentid}")
        for member in corp.members:
            self.check_member(member)
        # Pre-order, siblings by order descending (WeCom's larger-first), then as declared.
        self.children: dict[int, list[int]] = {d.id: [] for d in corp.departments}
        for dept in sorted(corp.departments, key=lambda d: -d.order):
            if dept.id != 1:
                self.children[dept.parentid].append(dept.id)

    def check_member(self, member: WeComMember) -> None:
        unknown = [d for d in member.departments if d not in self.departments]
        if not member.departments or unknown:
            raise ValueError(f"{member.userid}: departments must be known ids, at least one")

    def below(self, dept_id: int) -> list[int]:
        """``dept_id`` and every department under it, in pre-order."""
        found, stack = [], [dept_id]
        while stack:
            current = stack.pop()
            found.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        return found

    def visible_departments(self, app: WeComApp) -> list[int]:
        roots = [d for d in app.visible_departments if d in self.departments]
        seen: dict[int, None] = {}
        for root in roots:
            seen.update(dict.fromkeys(self.below(root)))
        return [d for d in self.below(1) if d in seen]

    def is_visible(self, app: WeComApp, member: WeComMember) -> bool:
        if member.userid.lower() in {userid.lower() for userid in app.visible_users}:
            return True
        shown = set(self.visible_departments(app))
        return any(d in shown for d in member.departments)


def encode(payload: Mapping[str, object]) -> bytes:
    """WeCom's JSON: compact, non-ASCII as raw UTF-8, valid JSON otherwise."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def host_of(uri: str) -> str | None:
    """The ``host[:port]`` a trusted-domain entry is compared with, or ``None`` when
    ``uri`` is not an absolute http(s) URL."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def callback_url(redirect_uri: str, params: Mapping[str, str]) -> str:
    """Append ``params`` to ``redirect_uri``'s query (``&`` if it has one), before any
    fragment, the way WeCom does."""
    base, hash_mark, fragment = redirect_uri.partition("#")
    joiner = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    return f"{base}{joiner}{urlencode(params)}{hash_mark}{fragment}"


class WeComState:
    """The simulated WeCom's memory. Every method that touches mutable state holds one lock;
    API methods return the JSON object WeCom would send, success or error."""

    def __init__(
        self,
        corps: Sequence[WeComCorp],
        *,
        code_ttl: float,
        token_ttl: int,
        user_ticket_ttl: float,
        expired_errcode: int,
        reuse_tokens: bool,
        ban_after: int | None,
        clock: Callable[[], float],
        seed: bytes,
    ) -> None:
        self._initial = tuple(corps)
        self._corps = self._build(corps)
        self._code_ttl = code_ttl
        self._token_ttl = token_ttl
        self._ticket_ttl = user_ticket_ttl
        self._expired_errcode = expired_errcode
        self._reuse_tokens = reuse_tokens
        self._ban_after = ban_after
        self._clock = clock
        self._seed = seed
        self._lock = threading.Lock()
        self._offset = 0.0
        self._tokens: dict[str, _Token] = {}
        self._latest: dict[tuple[str, int], str] = {}
        self._codes: dict[str, _Code] = {}
        self._tickets: dict[str, _UserTicket] = {}
        self._logins: dict[str, _Login] = {}
        self._wrong_secrets: dict[str, list[float]] = {}
        self._bans: dict[str, float] = {}
        self._faults: list[WeComFault] = []
        self._calls: deque[WeComCall] = deque(maxlen=_MAX_CALLS)
        self._release = threading.Event()

    @staticmethod
    def _build(corps: Sequence[WeComCorp]) -> dict[str, _Directory]:
        built = {corp.corp_id: _Directory(corp) for corp in corps}
        if len(built) != len(corps):
            raise ValueError("corp ids must be unique")
        return built

    # -- identities --

    def _derive(self, label: str) -> str:
        digest = hmac.new(self._seed, label.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def openid(self, corp_id: str, key: str) -> str:
        """A non-member's openid: corp-scoped and stable, like WeCom's."""
        return "o" + self._derive(f"openid:{corp_id}:{key}")[:27]

    def external_userid(self, corp_id: str, key: str) -> str:
        return "wm" + self._derive(f"external:{corp_id}:{key}")[:30]

    def _device_id(self, corp_id: str, person: str) -> str:
        return hashlib.sha256(self._seed + f"device:{corp_id}:{person}".encode()).hexdigest()[:32]

    def now(self) -> float:
        return self._clock() + self._offset

    # -- the directory --

    def corp_ids(self) -> list[str]:
        return list(self._corps)

    def _corp(self, corp_id: str | None) -> _Directory:
        if corp_id is None:
            return next(iter(self._corps.values()))
        try:
            return self._corps[corp_id]
        except KeyError:
            raise LookupError(f"unknown corp {corp_id!r}") from None

    def snapshot(self, corp_id: str | None = None) -> WeComCorp:
        """The corp as it is now (apps and members may have changed)."""
        with self._lock:
            corp = self._corp(corp_id)
            return WeComCorp(
                corp.corp_id,
                corp.name,
                tuple(corp.apps.values()),
                tuple(corp.departments.values()),
                tuple(corp.members.values()),
                tuple(corp.guests.values()),
            )

    def owns_corp(self, corp_id: str) -> bool:
        return corp_id in self._corps

    def is_visible(self, corp_id: str, agent_id: int, userid: str) -> bool:
        with self._lock:
            corp = self._corp(corp_id)
            member = corp.members.get(userid.lower())
            return member is not None and corp.is_visible(corp.apps[agent_id], member)

    def update_member(self, corp_id: str | None, userid: str, changes: Mapping[str, Any]) -> None:
        with self._lock:
            corp = self._corp(corp_id)
            member = corp.members.get(userid.lower())
            if member is None:
                raise LookupError(f"unknown member {userid!r}")
            if "userid" in changes:
                raise ValueError("a userid cannot change here: remove the member instead")
            updated = replace(member, **changes)
            corp.check_member(updated)
            corp.members[userid.lower()] = updated

    def remove_member(self, corp_id: str | None, userid: str) -> None:
        with self._lock:
            if self._corp(corp_id).members.pop(userid.lower(), None) is None:
                raise LookupError(f"unknown member {userid!r}")

    def update_app(self, corp_id: str | None, agent_id: int, changes: Mapping[str, Any]) -> None:
        with self._lock:
            corp = self._corp(corp_id)
            app = corp.apps.get(agent_id)
            if app is None:
                raise LookupError(f"unknown agent {agent_id!r}")
            if "agent_id" in changes:
                raise ValueError("agent_id cannot change")
            corp.apps[agent_id] = replace(app, **changes)

    # -- control --

    def advance_clock(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def invalidate_tokens(self, corp_id: str | None, agent_id: int) -> int:
        """WeCom dropped the app's tokens early: they answer 40014. Returns how many."""
        with self._lock:
            corp = self._corp(corp_id)
            if agent_id not in corp.apps:
                raise LookupError(f"unknown agent {agent_id!r}")
            hit = [
                t
                for t in self._tokens.values()
                if (t.corp_id, t.agent_id) == (corp.corp_id, agent_id)
            ]
            for token in hit:
                token.revoked = True
            return len(hit)

    def wrong_secrets(self, ip: str | None = None) -> int:
        """How many gettoken calls had a wrong secret (from ``ip``, or from anywhere)."""
        with self._lock:
            if ip is not None:
                return len(self._wrong_secrets.get(ip, []))
            return sum(map(len, self._wrong_secrets.values()))

    def add_fault(self, fault: WeComFault) -> None:
        with self._lock:
            self._faults.append(replace(fault))

    def faults(self) -> list[WeComFault]:
        with self._lock:
            return [replace(fault) for fault in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self.release_hangs()

    def take_fault(self, endpoint: WeComEndpoint) -> WeComFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in ("*", endpoint):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def hang(self, seconds: float) -> None:
        """Wait like a server that never answers, until ``seconds`` or a release."""
        with self._lock:
            released = self._release
        released.wait(seconds)

    def release_hangs(self) -> None:
        with self._lock:
            released, self._release = self._release, threading.Event()
        released.set()

    def record_call(self, endpoint: WeComEndpoint, request: ApiRequest, outcome: int | str) -> None:
        params = dict(request.params)
        if endpoint == "auth_getuserdetail":
            body = _json_object(request.body)
            for key, value in (body or {}).items():
                params.setdefault(str(key), str(value))
        redacted = {k: "<redacted>" if k in _SECRET_PARAMS else v for k, v in params.items()}
        with self._lock:
            self._calls.append(WeComCall(endpoint, redacted, outcome, self.now(), request.ip))

    def calls(self) -> list[WeComCall]:
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0
            self._corps = self._build(self._initial)
            for store in (
                self._tokens,
                self._latest,
                self._codes,
                self._tickets,
                self._logins,
                self._wrong_secrets,
                self._bans,
            ):
                store.clear()
            self._faults.clear()
            self._calls.clear()
        self.release_hangs()

    def _sweep(self, now: float) -> None:
        # Spent and expired entries are kept while few, so late replays get the precise
        # errcode; past the threshold the expired ones go.
        if len(self._codes) > _SWEEP_AT:
            self._codes = {k: v for k, v in self._codes.items() if v.expires > now}
        if len(self._tokens) > _SWEEP_AT:
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires > now}
        if len(self._tickets) > _SWEEP_AT:
            self._tickets = {k: v for k, v in self._tickets.items() if v.expires > now}
        if len(self._logins) > _SWEEP_AT:
            self._logins = {k: v for k, v in self._logins.items() if v.expires > now}

    # -- errors --

    def error(
        self, errcode: int, ip: str, endpoint: WeComEndpoint | None = None
    ) -> dict[str, object]:
        """WeCom's error object: errmsg with the hint suffix, plus the list key as ``[]``
        on list endpoints."""
        hint = f"{int(self.now()) % 10**10:010d}{secrets.randbelow(10**15):015d}"
        text = _ERRMSGS.get(errcode, "unknown error")
        payload: dict[str, object] = {
            "errcode": errcode,
            "errmsg": f"{text}, hint: [{hint}], from ip: {ip}, "
            f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}",
        }
        list_key = _LIST_KEYS.get(endpoint) if endpoint is not None else None
        if list_key is not None:
            payload[list_key] = []
        return payload

    # -- codes and browser logins --

    def mint_code(
        self,
        corp_id: str | None,
        agent_id: int | None,
        person: str,
        redirect_uri: str,
        scope: CodeScope = "web",
    ) -> str:
        """A code as if ``person`` had just authorized, bound to ``redirect_uri``'s host."""
        host = host_of(redirect_uri)
        if host is None:
            raise ValueError("redirect_uri must be an absolute http(s) URL")
        if scope not in get_args(CodeScope):
            raise ValueError(f"scope must be one of {', '.join(get_args(CodeScope))}")
        with self._lock:
            corp = self._corp(corp_id)
            if agent_id is not None and agent_id not in corp.apps:
                raise LookupError(f"unknown agent {agent_id!r}")
            return self._mint_code(corp, agent_id, host, scope, self._person(corp, person))

    def _person(self, corp: _Directory, key: str) -> WeComMember | WeComGuest:
        person = corp.members.get(key.lower()) or corp.guests.get(key)
        if person is None:
            raise UnknownPerson(f"unknown person {key!r}")
        return person

    def _mint_code(
        self,
        corp: _Directory,
        agent_id: int | None,
        host: str,
        scope: CodeScope,
        person: WeComMember | WeComGuest,
    ) -> str:
        now = self.now()
        self._sweep(now)
        key = person.userid if isinstance(person, WeComMember) else person.key
        device = "" if scope == "web" else self._device_id(corp.corp_id, key)
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            corp.corp_id,
            agent_id,
            host,
            scope,
            key,
            isinstance(person, WeComMember),
            device,
            now + self._code_ttl,
        )
        return code

    def open_login(
        self,
        kind: _LoginKind,
        corp_id: str,
        agent_id: int | None,
        redirect_uri: str,
        state: str,
        scope: CodeScope = "web",
        person: str | None = None,
    ) -> str:
        host = host_of(redirect_uri)
        if host is None:
            raise ValueError("redirect_uri must be an absolute http(s) URL")
        with self._lock:
            now = self.now()
            self._sweep(now)
            login_id = secrets.token_urlsafe(16)
            self._logins[login_id] = _Login(
                kind, corp_id, agent_id, redirect_uri, host, state, scope, now + _LOGIN_TTL, person
            )
            return login_id

    def _open(self, login_id: str) -> _Login:
        login = self._logins.get(login_id)
        if (
            login is None
            or login.expires <= self.now()
            or login.status
            not in (
                "waiting",
                "scanned",
            )
        ):
            raise LoginGone(login_id)
        return login

    def login_people(self, login_id: str) -> tuple[str, str, list[pages.Person]]:
        """The corp's name, the app's name and who may be picked, for a login's pages."""
        with self._lock:
            login = self._open(login_id)
            corp = self._corp(login.corp_id)
            app = corp.apps.get(login.agent_id) if login.agent_id is not None else None
            return corp.name, app.name if app else "", self._people(corp, app)

    def people(self, corp_id: str, agent_id: int | None) -> list[pages.Person]:
        with self._lock:
            corp = self._corp(corp_id)
            return self._people(corp, corp.apps.get(agent_id) if agent_id is not None else None)

    @staticmethod
    def _people(corp: _Directory, app: WeComApp | None) -> list[pages.Person]:
        members = [
            pages.Person(m.userid, m.name, m.status, app is None or corp.is_visible(app, m))
            for m in corp.members.values()
        ]
        return members + [pages.Person(g.key, g.name, member=False) for g in corp.guests.values()]

    def mark_scanned(self, login_id: str) -> None:
        with self._lock:
            self._open(login_id).status = "scanned"

    def choose(self, login_id: str, key: str) -> str:
        """``key`` authorized the login: spend it, mint a code, return the callback URL."""
        with self._lock:
            login = self._open(login_id)
            corp = self._corp(login.corp_id)
            person = self._person(corp, key)
            if login.person is not None and key.lower() != login.person.lower():
                raise UnknownPerson(f"this login is {login.person!r}'s, not {key!r}'s")
            if isinstance(person, WeComMember) and login.kind != "oauth2":
                app = corp.apps[cast(int, login.agent_id)]
                if not corp.is_visible(app, person):
                    raise NoPrivilege(person.userid)
            code = self._mint_code(corp, login.agent_id, login.host, login.scope, person)
            params = {"code": code, "state": login.state}
            if login.kind == "qrconnect":
                params["appid"] = corp.corp_id
            login.status = "confirmed"
            login.redirect = callback_url(login.redirect_uri, params)
            return login.redirect

    def deny(self, login_id: str) -> str:
        with self._lock:
            login = self._open(login_id)
            login.status = "denied"
            login.redirect = callback_url(login.redirect_uri, {"state": login.state})
            return login.redirect

    def poll(self, login_id: str) -> tuple[LoginStatus, str | None]:
        with self._lock:
            login = self._logins.get(login_id)
            if login is None or (login.expires <= self.now() and login.redirect is None):
                return "expired", None
            return login.status, login.redirect

    # -- the API --

    def _check_token(
        self, request: ApiRequest, endpoint: WeComEndpoint
    ) -> tuple[_Directory, WeComApp] | dict[str, object]:
        # The order is inferred (UNVERIFIED): missing, unknown, expired, revoked, then IP.
        access = request.params.get("access_token", "")
        if not access:
            return self.error(41001, request.ip, endpoint)
        token = self._tokens.get(access)
        if token is None:
            return self.error(40014, request.ip, endpoint)
        if token.expires <= self.now():
            return self.error(self._expired_errcode, request.ip, endpoint)
        if token.revoked:
            return self.error(40014, request.ip, endpoint)
        corp = self._corps[token.corp_id]
        app = corp.apps[token.agent_id]
        if not app.enabled:
            return self.error(50003, request.ip, endpoint)
        if app.trusted_ips is not None and request.ip not in app.trusted_ips:
            return self.error(60020, request.ip, endpoint)
        return corp, app

    def gettoken(self, request: ApiRequest) -> dict[str, object]:
        params, ip = request.params, request.ip
        with self._lock:
            now = self.now()
            corp_id = params.get("corpid", "")
            if not corp_id:
                return self.error(41002, ip)
            if self._bans.get(ip, 0.0) > now:
                return self.error(45009, ip)
            corp = self._corps.get(corp_id)
            if corp is None:
                return self.error(40013, ip)
            secret = params.get("corpsecret", "")
            if not secret:
                return self.error(41004, ip)
            app = next(
                (
                    a
                    for a in corp.apps.values()
                    if hmac.compare_digest(secret.encode(), a.secret.encode())
                ),
                None,
            )
            if app is None:
                self._count_wrong_secret(ip, now)
                return self.error(40001, ip)
            if not app.enabled:
                return self.error(50003, ip)
            self._sweep(now)
            latest = self._latest.get((corp.corp_id, app.agent_id))
            reused = self._tokens.get(latest) if latest and self._reuse_tokens else None
            if latest and reused is not None and not reused.revoked and reused.expires > now:
                return {
                    "errcode": 0,
                    "errmsg": "ok",
                    "access_token": latest,
                    "expires_in": int(reused.expires - now),
                }
            access = secrets.token_urlsafe(96)
            self._tokens[access] = _Token(corp.corp_id, app.agent_id, now + self._token_ttl)
            self._latest[corp.corp_id, app.agent_id] = access
            return {
                "errcode": 0,
                "errmsg": "ok",
                "access_token": access,
                "expires_in": self._token_ttl,
            }

    def _count_wrong_secret(self, ip: str, now: float) -> None:
        attempts = self._wrong_secrets.setdefault(ip, [])
        attempts.append(now)
        recent = [t for t in attempts if t > now - _BAN_SECONDS]
        if self._ban_after is not None and len(recent) >= self._ban_after:
            self._bans[ip] = now + _BAN_SECONDS

    def _redeem(
        self, request: ApiRequest, endpoint: WeComEndpoint
    ) -> tuple[_Directory, WeComApp, _Code] | dict[str, object]:
        checked = self._check_token(request, endpoint)
        if isinstance(checked, dict):
            return checked
        corp, app = checked
        code = request.params.get("code", "")
        if not code:
            return self.error(41008, request.ip)
        grant = self._codes.get(code)
        if (
            grant is None
            or grant.corp_id != corp.corp_id
            or grant.used
            or grant.expires <= self.now()
        ):
            return self.error(40029, request.ip)
        if not app.trusts(grant.host):
            return self.error(50001, request.ip)
        grant.used = True
        return corp, app, grant

    def _user_ticket(self, corp: _Directory, app: WeComApp, grant: _Code) -> str | None:
        """A ticket for ``snsapi_privateinfo`` codes of members the app can see."""
        member = corp.members.get(grant.person.lower())
        if grant.scope != "snsapi_privateinfo" or member is None:
            return None
        if not corp.is_visible(app, member):
            return None
        ticket = secrets.token_urlsafe(64)
        self._tickets[ticket] = _UserTicket(
            corp.corp_id, app.agent_id, member.userid, self.now() + self._ticket_ttl
        )
        return ticket

    def auth_getuserinfo(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            redeemed = self._redeem(request, "auth_getuserinfo")
            if isinstance(redeemed, dict):
                return redeemed
            corp, app, grant = redeemed
            payload: dict[str, object] = {"errcode": 0, "errmsg": "ok"}
            if not grant.member:
                payload["openid"] = self.openid(corp.corp_id, grant.person)
                guest = corp.guests.get(grant.person)
                if guest is not None and guest.customer:
                    payload["external_userid"] = self.external_userid(corp.corp_id, guest.key)
                return payload
            payload["userid"] = grant.person
            ticket = self._user_ticket(corp, app, grant)
            if ticket is not None:
                payload["user_ticket"] = ticket
            return payload

    def user_getuserinfo(self, request: ApiRequest) -> dict[str, object]:
        """The legacy spelling: CamelCase keys first, errcode and errmsg last."""
        with self._lock:
            redeemed = self._redeem(request, "user_getuserinfo")
            if isinstance(redeemed, dict):
                return redeemed
            corp, app, grant = redeemed
            payload: dict[str, object] = {}
            if grant.member:
                payload["UserId"] = grant.person
            else:
                payload["OpenId"] = self.openid(corp.corp_id, grant.person)
            payload["DeviceId"] = grant.device_id
            ticket = self._user_ticket(corp, app, grant) if grant.member else None
            if ticket is not None:
                payload["user_ticket"] = ticket
                payload["expires_in"] = _LEGACY_TICKET_EXPIRES_IN
            return {**payload, "errcode": 0, "errmsg": "ok"}

    def auth_getuserdetail(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            checked = self._check_token(request, "auth_getuserdetail")
            if isinstance(checked, dict):
                return checked
            corp, app = checked
            body = _json_object(request.body)
            if body is None:
                return self.error(47001, request.ip)
            value = body.get("user_ticket")
            ticket = self._tickets.get(value) if isinstance(value, str) else None
            if ticket is None or (ticket.corp_id, ticket.agent_id) != (
                corp.corp_id,
                app.agent_id,
            ):
                return self.error(84015, request.ip)
            if ticket.expires <= self.now():
                return self.error(84014, request.ip)
            member = corp.members.get(ticket.userid.lower())
            if member is None:
                return self.error(60111, request.ip)
            if not corp.is_visible(app, member):
                return self.error(60011, request.ip)
            return {
                "errcode": 0,
                "errmsg": "ok",
                "userid": member.userid,
                "gender": member.gender,
                "avatar": member.avatar,
                "qr_code": self._qr_code(corp, member),
                "mobile": member.mobile,
                "email": member.email,
                "biz_mail": member.biz_mail,
                "address": member.address,
            }

    def _qr_code(self, corp: _Directory, member: WeComMember) -> str:
        vcode = self._derive(f"qr:{corp.corp_id}:{member.userid.lower()}")[:24]
        return f"https://open.work.weixin.qq.com/wwopen/userQRCode?vcode={vcode}"

    def user_get(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            checked = self._check_token(request, "user_get")
            if isinstance(checked, dict):
                return checked
            corp, app = checked
            userid = request.params.get("userid", "")
            if not userid:
                return self.error(41009, request.ip)
            member = corp.members.get(userid.lower())
            if member is None:
                return self.error(60111, request.ip)
            if not corp.is_visible(app, member):
                return self.error(60011, request.ip)
            shown = set(corp.visible_departments(app))
            departments = [d for d in member.departments if d in shown]
            payload: dict[str, object] = {
                "errcode": 0,
                "errmsg": "ok",
                "userid": member.userid,
                "name": member.name,
                "department": departments,
                "order": [0] * len(departments),
                "position": member.position,
                "mobile": member.mobile,
                "gender": member.gender,
                "email": member.email,
                "biz_mail": member.biz_mail,
                "is_leader_in_dept": [int(d in member.leader_in) for d in departments],
                "direct_leader": list(member.direct_leader),
                "avatar": member.avatar,
                "thumb_avatar": member.thumb_avatar,
                "telephone": member.telephone,
                "alias": member.alias,
                "address": member.address,
                "main_department": member.main_department or member.departments[0],
                "extattr": {"attrs": []},
                "status": member.status,
                "qr_code": self._qr_code(corp, member),
                "external_position": "",
                "external_profile": {"external_corp_name": corp.name, "external_attr": []},
            }
            if app.created_after_2022_06_20:
                payload = {k: v for k, v in payload.items() if k not in _DROPPED_FIELDS}
            return payload

    def _departments(
        self, request: ApiRequest, endpoint: WeComEndpoint, *, required: bool = False
    ) -> tuple[_Directory, list[WeComDepartment]] | dict[str, object]:
        """The visible departments at and below ``?id`` (all visible ones without it)."""
        checked = self._check_token(request, endpoint)
        if isinstance(checked, dict):
            return checked
        corp, app = checked
        shown = corp.visible_departments(app)
        wanted = request.params.get("id", "")
        if not wanted and not required:
            return corp, [corp.departments[d] for d in shown]
        dept_id = int(wanted) if wanted.isascii() and wanted.isdigit() else None
        if dept_id is None or dept_id not in corp.departments:
            return self.error(60003, request.ip, endpoint)
        if dept_id not in shown:
            return self.error(60011, request.ip, endpoint)
        below = set(corp.below(dept_id))
        return corp, [corp.departments[d] for d in shown if d in below]

    def department_list(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            found = self._departments(request, "department_list")
            if isinstance(found, dict):
                return found
            _, departments = found
            return {
                "errcode": 0,
                "errmsg": "ok",
                "department": [_department_json(d) for d in departments],
            }

    def department_simplelist(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            found = self._departments(request, "department_simplelist")
            if isinstance(found, dict):
                return found
            _, departments = found
            return {
                "errcode": 0,
                "errmsg": "ok",
                "department_id": [
                    {"id": d.id, "parentid": d.parentid, "order": d.order} for d in departments
                ],
            }

    def department_get(self, request: ApiRequest) -> dict[str, object]:
        with self._lock:
            found = self._departments(request, "department_get", required=True)
            if isinstance(found, dict):
                return found
            _, departments = found
            return {"errcode": 0, "errmsg": "ok", "department": _department_json(departments[0])}


def _department_json(dept: WeComDepartment) -> dict[str, object]:
    shown: dict[str, object] = {"id": dept.id, "name": dept.name}
    if dept.name_en:
        shown["name_en"] = dept.name_en
    shown.update(department_leader=list(dept.leaders), parentid=dept.parentid, order=dept.order)
    return shown


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


# -- the WSGI app ---------------------------------------------------------------------------

_ROUTES: Final = Map(
    [
        Rule("/", endpoint="index", methods=["GET"]),
        Rule("/wwlogin/sso/login", endpoint="sso_login", methods=["GET"]),
        Rule("/wwlogin/sso/login/", endpoint="sso_login", methods=["GET"]),
        Rule("/wwopen/sso/qrConnect", endpoint="qrconnect", methods=["GET"]),
        Rule(_OAUTH2_PATH, endpoint="oauth2_authorize", methods=["GET"]),
        Rule("/wwopen/uriconfirm", endpoint="uriconfirm", methods=["GET"]),
        Rule("/wwopen/sim/pick/<login>", endpoint="pick", methods=["GET"]),
        Rule("/wwopen/sim/scan/<login>", endpoint="scan", methods=["GET", "POST"]),
        Rule("/wwopen/sim/poll/<login>", endpoint="poll", methods=["GET"]),
        *(Rule(path, endpoint="api", methods=["GET", "POST"]) for path in _API_PATHS),
        Rule("/_sim/wecom/faults", endpoint="sim_faults", methods=["GET", "POST", "DELETE"]),
        Rule("/_sim/wecom/calls", endpoint="sim_calls", methods=["GET", "DELETE"]),
        Rule("/_sim/wecom/clock", endpoint="sim_clock", methods=["POST"]),
        Rule("/_sim/wecom/invalidate", endpoint="sim_invalidate", methods=["POST"]),
        Rule("/_sim/wecom/code", endpoint="sim_code", methods=["POST"]),
        Rule("/_sim/wecom/member", endpoint="sim_member", methods=["POST"]),
        Rule("/_sim/wecom/app", endpoint="sim_app", methods=["POST"]),
        Rule("/_sim/wecom/directory", endpoint="sim_directory", methods=["GET"]),
        Rule("/_sim/wecom/release", endpoint="sim_release", methods=["POST"]),
        Rule("/_sim/wecom/reset", endpoint="sim_reset", methods=["POST"]),
    ]
)


class _BadControl(Exception):
    """A malformed control API request; becomes a 400 with the message."""


class WeComSimulator:
    """A simulated WeCom (web login, legacy QR page, in-app authorization, ``/cgi-bin/``
    API) as a WSGI app. Thread-safe: all state sits behind one lock, and ``delay`` and
    ``hang`` faults wait outside it.

    ``fallback``: a WSGI app for every request that is not WeCom's (see ``claims``), so
    that one server can also be the WeChat simulator.
    """

    def __init__(
        self,
        corps: Sequence[WeComCorp],
        *,
        fallback: WSGIApplication | None = None,
        code_ttl: float = 300,
        token_ttl: int = 7200,
        user_ticket_ttl: float = 1800,
        expired_errcode: int = 42001,
        reuse_tokens: bool = False,
        ban_after: int | None = None,
        clock: Callable[[], float] = time.time,
        seed: bytes = b"wechat-gateway wecom simulator",
    ) -> None:
        if not corps:
            raise ValueError("at least one corp is needed")
        self.fallback = fallback
        self._state = WeComState(
            corps,
            code_ttl=code_ttl,
            token_ttl=token_ttl,
            user_ticket_ttl=user_ticket_ttl,
            expired_errcode=expired_errcode,
            reuse_tokens=reuse_tokens,
            ban_after=ban_after,
            clock=clock,
            seed=seed,
        )

    @classmethod
    def default(
        cls,
        *,
        trusted_domains: Sequence[str] = (
            "intranet.example.com",
            "127.0.0.1:8000",
            "localhost:8000",
        ),
        **kwargs: Any,
    ) -> WeComSimulator:
        """A believable demo corp (``DEMO_CORP_ID``): departments two levels deep, members
        covering the cases a client must handle, one non-member, and three apps:

        - ``DEMO_AGENT_ID`` (1000002) "内部门户", created after 2022-06-20 (fields dropped),
          trusting ``trusted_domains``, visible to 研发中心 (id 2) and below plus
          ``qian-ba@hq`` by name;
        - ``DEMO_LEGACY_AGENT_ID`` (1000003), an older app (all fields), visible to the whole
          corp, trusting ``legacy.example.com`` only;
        - ``DEMO_DISABLED_AGENT_ID`` (1000004), disabled.

        Members (userid: name, departments, status): ``ZhangSan`` 张三 (3) leader of 3;
        ``lisi`` "李四\\x14🚀" (4, 3) a control character and an emoji in the name;
        ``WangWu`` 王五 (3) disabled; ``SunQi`` 孙七 (4) not activated; ``Zhao.Liu`` 赵六 (6)
        outside 1000002's visibility; ``qian-ba@hq`` 钱八 (5) visible to 1000002 by name
        only, so its ``department`` there is empty. Non-member: ``partner`` (a customer).
        """
        avatar = "https://wework.qpic.cn/wwpic/{}/0"
        corp = WeComCorp(
            DEMO_CORP_ID,
            "示例科技有限公司",
            apps=(
                WeComApp(
                    DEMO_AGENT_ID,
                    "pX3kT9vQ2mZ7rW5yB8nC4dF6gH1jL0sA-eU_iO2wKcE",
                    "内部门户 Intranet",
                    trusted_domains=tuple(trusted_domains),
                    visible_departments=(2,),
                    visible_users=("QIAN-BA@HQ",),
                ),
                WeComApp(
                    DEMO_LEGACY_AGENT_ID,
                    "Lg7aQ2wE9rT4yU1iO6pA3sD8fG5hJ0kZxC_vB-nM1qW",
                    "旧版审批 Legacy approvals",
                    trusted_domains=("legacy.example.com",),
                    created_after_2022_06_20=False,
                ),
                WeComApp(
                    DEMO_DISABLED_AGENT_ID,
                    "Dz0xC9vB8nM7qW6eR5tY4uI3oP2aS1dF0gH-jK_lZxQ",
                    "已停用应用 Retired",
                    trusted_domains=tuple(trusted_domains),
                    enabled=False,
                ),
            ),
            departments=(
                WeComDepartment(1, "示例科技有限公司", parentid=0, name_en="Example Tech"),
                WeComDepartment(
                    2, "研发中心", name_en="R&D", order=100000000, leaders=("ZhangSan",)
                ),
                WeComDepartment(3, "平台组", parentid=2, name_en="Platform", order=100000000),
                WeComDepartment(4, "前端组", parentid=2, name_en="Frontend", order=99999000),
                WeComDepartment(5, "市场部", name_en="Marketing", order=99999000),
                WeComDepartment(6, "华南销售", parentid=5, order=100000000),
            ),
            members=(
                WeComMember(
                    "ZhangSan",
                    "张三",
                    (3,),
                    gender="1",
                    avatar=avatar.format("Zs4Xn9Qp2Lw"),
                    position="平台组组长",
                    mobile="13800000001",
                    email="zhangsan@example.com",
                    biz_mail="zhangsan@example.wecom.work",
                    leader_in=(3,),
                ),
                WeComMember(
                    "lisi",
                    "李四\x14🚀",
                    (4, 3),
                    gender="2",
                    avatar=avatar.format("Ls7Kd2Vb8Rt"),
                    position="前端工程师",
                    mobile="13800000002",
                    email="lisi@example.com",
                    direct_leader=("ZhangSan",),
                    main_department=4,
                ),
                WeComMember("WangWu", "王五", (3,), status=2, gender="1"),
                WeComMember("SunQi", "孙七", (4,), status=4),
                WeComMember(
                    "Zhao.Liu", "赵六", (6,), gender="1", avatar=avatar.format("Zl3Hy6Ws1Pq")
                ),
                WeComMember("qian-ba@hq", "钱八", (5,), gender="2", position="市场经理"),
            ),
            guests=(WeComGuest("partner", "外部合作伙伴 Partner", customer=True),),
        )
        return cls([corp], **kwargs)

    # -- Python mirror of the control API --

    def corp(self, corp_id: str | None = None) -> WeComCorp:
        """The corp (the first one by default) as it is now."""
        return self._state.snapshot(corp_id)

    def app(self, agent_id: int = DEMO_AGENT_ID, corp_id: str | None = None) -> WeComApp:
        for app in self.corp(corp_id).apps:
            if app.agent_id == agent_id:
                return app
        raise LookupError(agent_id)

    def openid(self, key: str, corp_id: str | None = None) -> str:
        """A non-member's openid in that corp."""
        return self._state.openid(self.corp(corp_id).corp_id, key)

    def external_userid(self, key: str, corp_id: str | None = None) -> str:
        return self._state.external_userid(self.corp(corp_id).corp_id, key)

    def mint_code(
        self,
        person: str,
        redirect_uri: str,
        *,
        agent_id: int | None = DEMO_AGENT_ID,
        scope: CodeScope = "web",
        corp_id: str | None = None,
    ) -> str:
        """A fresh code, as if ``person`` (a userid, any case, or a non-member's key) had
        just signed in to go to ``redirect_uri``. No visibility check: that is the
        login page's."""
        return self._state.mint_code(corp_id, agent_id, person, redirect_uri, scope)

    def invalidate_tokens(self, agent_id: int = DEMO_AGENT_ID, corp_id: str | None = None) -> int:
        """WeCom drops the app's tokens before they expire (they answer 40014)."""
        return self._state.invalidate_tokens(corp_id, agent_id)

    def update_member(self, userid: str, corp_id: str | None = None, **changes: Any) -> None:
        """Change a member (``status=2`` disables them), as an admin would."""
        self._state.update_member(corp_id, userid, changes)

    def remove_member(self, userid: str, corp_id: str | None = None) -> None:
        self._state.remove_member(corp_id, userid)

    def update_app(self, agent_id: int, corp_id: str | None = None, **changes: Any) -> None:
        """Change an app's settings (``enabled``, ``trusted_domains``, visibility, IPs)."""
        self._state.update_app(corp_id, agent_id, changes)

    def wrong_secrets(self, ip: str | None = None) -> int:
        return self._state.wrong_secrets(ip)

    def add_fault(self, fault: WeComFault) -> None:
        self._state.add_fault(fault)

    def faults(self) -> list[WeComFault]:
        return self._state.faults()

    def clear_faults(self) -> None:
        self._state.clear_faults()

    def release_hangs(self) -> None:
        self._state.release_hangs()

    def calls(self, endpoint: WeComEndpoint | None = None) -> list[WeComCall]:
        return [c for c in self._state.calls() if endpoint in (None, c.endpoint)]

    def clear_calls(self) -> None:
        self._state.clear_calls()

    def advance_clock(self, seconds: float) -> None:
        self._state.advance_clock(seconds)

    def reset(self) -> None:
        self._state.reset()

    # -- WSGI --

    def claims(self, environ: WSGIEnvironment) -> bool:
        """Whether a request is WeCom's: its own paths, or the in-app authorization for
        one of its corps (WeChat's Official Accounts use the same path with a ``wx`` id)."""
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith(_OWN_PREFIXES) or path == "/_sim/wecom":
            return True
        if path == _OAUTH2_PATH:
            appid = Request(environ).args.get("appid", "")
            return self._state.owns_corp(appid)
        return False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.fallback is not None and not self.claims(environ):
            return self.fallback(environ, start_response)
        request = Request(environ)
        try:
            endpoint, args = _ROUTES.bind_to_environ(environ).match()
            handler: Callable[..., Response] = getattr(self, f"_{endpoint}")
            response = handler(request, **args)
        except HTTPException as exc:
            response = exc.get_response()
        return response(environ, start_response)

    # -- browser pages --

    def _index(self, request: Request) -> Response:
        lang = _lang(request)
        corps = []
        for corp_id in self._state.corp_ids():
            corp = self.corp(corp_id)
            corps.append(
                pages.IndexCorp(
                    corp.corp_id,
                    corp.name,
                    [
                        pages.IndexApp(a.agent_id, a.name, a.enabled, a.trusted_domains)
                        for a in corp.apps
                    ],
                    self._state.people(corp_id, None),
                    {g.key: self._state.openid(corp_id, g.key) for g in corp.guests},
                )
            )
        return _html(pages.index_page(corps, lang))

    def _app_for(self, corp_id: str, agentid: str) -> WeComApp | None:
        if not self._state.owns_corp(corp_id) or not agentid.isascii() or not agentid.isdigit():
            return None
        return next((a for a in self.corp(corp_id).apps if a.agent_id == int(agentid)), None)

    def _sso_login(self, request: Request) -> Response:
        """The new web login (``login.work.weixin.qq.com``)."""
        args, lang = request.args, _lang(request)

        def refuse(message: pages.Said) -> Response:
            return _html(pages.error_page(message, lang))

        corp_id = args.get("appid", "")
        app = self._app_for(corp_id, args.get("agentid", ""))
        redirect_uri = args.get("redirect_uri", "")
        host = host_of(redirect_uri)
        if args.get("login_type") != "CorpApp" or app is None or host is None:
            return refuse(pages.BAD_PARAMS)
        if not app.enabled:
            return refuse(pages.APP_DISABLED)
        if not app.trusts(host):
            return refuse(pages.DOMAIN_MISMATCH)
        login = self._state.open_login(
            "sso", corp_id, app.agent_id, redirect_uri, args.get("state", "")
        )
        return self._login_page(request, login, lang, top=False)

    def _qrconnect(self, request: Request) -> Response:
        """The legacy QR page (``open.work.weixin.qq.com/wwopen/sso/qrConnect``)."""
        args, lang = request.args, _lang(request)
        corp_id = args.get("appid", "")
        app = self._app_for(corp_id, args.get("agentid", ""))
        redirect_uri = args.get("redirect_uri", "")
        host = host_of(redirect_uri)
        if app is None or host is None or not app.enabled or not app.trusts(host):
            return _html(pages.error_page(pages.LINK_INVALID, lang))
        login = self._state.open_login(
            "qrconnect", corp_id, app.agent_id, redirect_uri, args.get("state", "")
        )
        return self._login_page(request, login, lang, top=args.get("login_type") == "jssdk")

    def _login_page(self, request: Request, login: str, lang: Lang, *, top: bool) -> Response:
        chosen = request.args.get("sim_user")
        if chosen is not None:
            return self._choose(login, chosen, lang)
        corp, app, people = self._state.login_people(login)
        return _html(
            pages.login_page(
                corp=corp,
                app=app,
                ticket_id=login,
                scan_url=f"{request.host_url}wwopen/sim/scan/{quote(login)}",
                people=people,
                lang=lang,
                top=top,
            )
        )

    def _choose(self, login: str, key: str, lang: Lang) -> Response:
        try:
            return _redirect(self._state.choose(login, key))
        except NoPrivilege:
            return _html(pages.no_privilege_page(lang))
        except UnknownPerson:
            return _html(pages.error_page(pages.UNKNOWN_USER, lang), 400)
        except LoginGone:
            return _html(pages.gone_page(lang), 410)

    def _oauth2_authorize(self, request: Request) -> Response:
        """In-app authorization (``open.weixin.qq.com/connect/oauth2/authorize``)."""
        args, lang = request.args, _lang(request)

        def refuse(message: pages.Said, errcode: int | None = None) -> Response:
            return _html(pages.error_page(message, lang, errcode))

        if "wxwork" not in request.headers.get("User-Agent", "").lower():
            return _html(pages.open_in_wecom_page(lang))
        corp_id = args.get("appid", "")
        if not self._state.owns_corp(corp_id):
            return refuse(pages.BAD_PARAMS)
        agentid = args.get("agentid", "")
        app = self._app_for(corp_id, agentid) if agentid else None
        if agentid and app is None:
            return refuse(pages.BAD_PARAMS)
        if app is not None and not app.enabled:
            return refuse(pages.APP_DISABLED)
        redirect_uri = args.get("redirect_uri", "")
        host = host_of(redirect_uri)
        if host is None:
            return refuse(pages.BAD_PARAMS)
        candidates = [app] if app is not None else [a for a in self.corp(corp_id).apps if a.enabled]
        if not any(candidate.trusts(host) for candidate in candidates):
            target = f"/wwopen/uriconfirm?err_type=domain_err&uri={quote(redirect_uri, safe='')}"
            return redirect(target, 302)
        scope = args.get("scope", "")
        if args.get("response_type") != "code" or scope not in (
            "snsapi_base",
            "snsapi_userinfo",
            "snsapi_privateinfo",
        ):
            return refuse(pages.BAD_PARAMS)
        state = args.get("state", "")
        if not _STATE_RE.fullmatch(state):
            return refuse(pages.BAD_PARAMS, 84025)
        private = scope == "snsapi_privateinfo" and app is not None
        key = args.get("sim_user") or request.cookies.get(SESSION_COOKIE)
        if not key:
            offered = self._state.people(corp_id, app.agent_id if app else None)
            base = f"{request.path}?{request.query_string.decode('latin-1')}&sim_user="
            links = [(p, base + quote(p.key, safe="")) for p in offered]
            return _html(pages.chooser_page(links, lang))
        everyone = {p.key.lower(): p for p in self._state.people(corp_id, None)}
        person = everyone.get(key.lower())
        if person is None:
            return _html(pages.error_page(pages.UNKNOWN_USER, lang), 400)
        agent_id = app.agent_id if app is not None else None
        if private and person.member:
            assert agent_id is not None
            if not self._state.is_visible(corp_id, agent_id, person.key):
                return _html(pages.no_privilege_page(lang))
            login = self._state.open_login(
                "oauth2",
                corp_id,
                agent_id,
                redirect_uri,
                state,
                "snsapi_privateinfo",
                person.key,
            )
            return _html(pages.consent_page(app.name if app else "", login, person, lang))
        login = self._state.open_login(
            "oauth2", corp_id, agent_id, redirect_uri, state, "snsapi_base", person.key
        )
        return self._choose(login, person.key, lang)

    def _uriconfirm(self, request: Request) -> Response:
        return _html(pages.error_page(pages.DOMAIN_ERR, _lang(request)))

    def _pick(self, request: Request, login: str) -> Response:
        """A choice made by link: ``?user=KEY`` signs in, ``?deny=1`` denies."""
        lang = _lang(request)
        if request.args.get("deny"):
            try:
                return _redirect(self._state.deny(login))
            except LoginGone:
                return _html(pages.gone_page(lang), 410)
        return self._choose(login, request.args.get("user", ""), lang)

    def _scan(self, request: Request, login: str) -> Response:
        """The phone side: the desktop page learns the outcome by polling."""
        lang = _lang(request)
        try:
            corp, app, people = self._state.login_people(login)
            if request.method == "GET":
                self._state.mark_scanned(login)
                return _html(
                    pages.phone_page(corp=corp, app=app, ticket_id=login, people=people, lang=lang)
                )
            if request.form.get("deny"):
                self._state.deny(login)
                return _html(pages.done_page(False, lang))
            self._state.choose(login, request.form.get("user", ""))
            return _html(pages.done_page(True, lang))
        except NoPrivilege:
            return _html(pages.no_privilege_page(lang))
        except UnknownPerson:
            return _html(pages.error_page(pages.UNKNOWN_USER, lang), 400)
        except LoginGone:
            return _html(pages.gone_page(lang), 410)

    def _poll(self, request: Request, login: str) -> Response:
        status, target = self._state.poll(login)
        return _json({"status": status, "redirect": target})

    # -- the API --

    def _api(self, request: Request) -> Response:
        endpoint = _API_PATHS[request.path]
        params = request.args.to_dict()
        body = request.get_data()  # cached first: WeCom reads the raw body whatever its type
        if request.mimetype == "application/x-www-form-urlencoded":
            for key, value in request.form.items():
                params.setdefault(key, value)
        call = ApiRequest(params, request.remote_addr or "", body)
        fault = self._state.take_fault(endpoint)
        outcome: int | str
        if fault is None or fault.mode == "delay":
            payload: dict[str, object] = getattr(self._state, endpoint)(call)
            outcome = cast(int, payload["errcode"])
            response = _wecom(payload)
        elif fault.mode == "errcode":
            outcome = fault.errcode
            response = _wecom(self._state.error(fault.errcode, call.ip, endpoint))
        elif fault.mode == "http_status":
            outcome = fault.mode
            response = Response(_GARBAGE, fault.status, content_type="text/html")
        elif fault.mode == "garbage":
            outcome = fault.mode
            garbage = _GARBAGE if fault.body is None else fault.body.encode("utf-8")
            response = Response(garbage, 200, content_type=CONTENT_TYPE)
        else:
            self._state.record_call(endpoint, call, fault.mode)
            if fault.mode == "hang":
                self._state.hang(fault.delay)
            _drop_connection(request.environ)
        self._state.record_call(endpoint, call, outcome)
        if fault is not None and fault.mode == "delay":
            time.sleep(fault.delay)
        return response

    # -- control API --

    def _sim_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._state.clear_faults()
            return _json({"ok": True})
        if request.method == "GET":
            return _json({"faults": [_fault_json(f) for f in self._state.faults()]})
        try:
            body = _control_body(request)
            names = {f.name for f in fields(WeComFault)}
            fault = WeComFault(**{k: v for k, v in body.items() if k in names})
        except (TypeError, ValueError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        self._state.add_fault(fault)
        return _json({"ok": True})

    def _sim_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._state.clear_calls()
            return _json({"ok": True})
        wanted = request.args.get("endpoint")
        return _json(
            {
                "calls": [
                    {
                        "endpoint": c.endpoint,
                        "params": dict(c.params),
                        "outcome": c.outcome,
                        "at": c.at,
                        "ip": c.ip,
                    }
                    for c in self._state.calls()
                    if wanted in (None, c.endpoint)
                ]
            }
        )

    def _sim_clock(self, request: Request) -> Response:
        try:
            seconds = _control_body(request).get("advance")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise _BadControl("advance must be a number of seconds")
        except _BadControl as exc:
            return _json({"error": str(exc)}, 400)
        self._state.advance_clock(float(seconds))
        return _json({"ok": True, "now": self._state.now()})

    def _sim_invalidate(self, request: Request) -> Response:
        try:
            body = _control_body(request)
            count = self._state.invalidate_tokens(
                _optional_str(body, "corp_id"), _int(body, "agent_id", DEMO_AGENT_ID)
            )
        except (LookupError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True, "invalidated": count})

    def _sim_code(self, request: Request) -> Response:
        try:
            body = _control_body(request)
            agent = body.get("agent_id", DEMO_AGENT_ID)
            if agent is not None and (isinstance(agent, bool) or not isinstance(agent, int)):
                raise _BadControl("agent_id must be an integer or null")
            scope = body.get("scope", "web")
            if scope not in get_args(CodeScope):
                raise _BadControl(f"scope must be one of {', '.join(get_args(CodeScope))}")
            code = self._state.mint_code(
                _optional_str(body, "corp_id"),
                agent,
                str(body.get("user", "")),
                str(body.get("redirect_uri", "")),
                cast(CodeScope, scope),
            )
        except (ValueError, LookupError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"code": code})

    def _sim_member(self, request: Request) -> Response:
        try:
            body = _control_body(request)
            corp_id, userid = _optional_str(body, "corp_id"), str(body.get("userid", ""))
            if body.get("remove") is True:
                self._state.remove_member(corp_id, userid)
            else:
                changes = {
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in body.items()
                    if k not in ("corp_id", "userid", "remove")
                }
                self._state.update_member(corp_id, userid, changes)
        except (TypeError, ValueError, LookupError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True})

    def _sim_app(self, request: Request) -> Response:
        try:
            body = _control_body(request)
            changes = {
                k: tuple(v) if isinstance(v, list) else v
                for k, v in body.items()
                if k not in ("corp_id", "agent_id")
            }
            self._state.update_app(
                _optional_str(body, "corp_id"), _int(body, "agent_id", DEMO_AGENT_ID), changes
            )
        except (TypeError, ValueError, LookupError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True})

    def _sim_directory(self, request: Request) -> Response:
        corps = []
        for corp_id in self._state.corp_ids():
            corp = self.corp(corp_id)
            corps.append(
                {
                    "corp_id": corp.corp_id,
                    "name": corp.name,
                    "apps": [
                        {
                            "agent_id": a.agent_id,
                            "name": a.name,
                            "trusted_domains": list(a.trusted_domains),
                            "visible_departments": list(a.visible_departments),
                            "visible_users": list(a.visible_users),
                            "enabled": a.enabled,
                            "created_after_2022_06_20": a.created_after_2022_06_20,
                            "trusted_ips": None if a.trusted_ips is None else list(a.trusted_ips),
                        }
                        for a in corp.apps
                    ],
                    "departments": [_department_json(d) for d in corp.departments],
                    "members": [
                        {
                            "userid": m.userid,
                            "name": m.name,
                            "departments": list(m.departments),
                            "status": m.status,
                            "visible_to": [
                                a.agent_id
                                for a in corp.apps
                                if self._state.is_visible(corp.corp_id, a.agent_id, m.userid)
                            ],
                        }
                        for m in corp.members
                    ],
                    "guests": [
                        {
                            "key": g.key,
                            "name": g.name,
                            "openid": self._state.openid(corp.corp_id, g.key),
                            "external_userid": self._state.external_userid(corp.corp_id, g.key)
                            if g.customer
                            else None,
                        }
                        for g in corp.guests
                    ],
                }
            )
        return _json({"corps": corps})

    def _sim_release(self, request: Request) -> Response:
        self._state.release_hangs()
        return _json({"ok": True})

    def _sim_reset(self, request: Request) -> Response:
        self._state.reset()
        return _json({"ok": True})


def _lang(request: Request) -> Lang:
    """``?lang=`` (zh or en), then ``Accept-Language``, then Chinese, as WeCom's pages."""
    return negotiate_lang(request.environ, "zh")


def _drop_connection(environ: WSGIEnvironment) -> NoReturn:
    """Close the client connection without a reply (an RST where the server allows it)."""
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionResetError("simulated connection reset")


def _control_body(request: Request) -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise _BadControl("the body must be a JSON object")
    return body


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _BadControl(f"{name} must be a string")
    return value


def _int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadControl(f"{name} must be an integer")
    return value


def _fault_json(fault: WeComFault) -> dict[str, object]:
    return {f.name: getattr(fault, f.name) for f in fields(WeComFault)}


def _wecom(payload: Mapping[str, object]) -> Response:
    response = Response(encode(payload), 200, content_type=CONTENT_TYPE)
    # Seen in one capture (UNVERIFIED): the errcode repeated in headers.
    response.headers["Error-Code"] = str(payload.get("errcode", 0))
    response.headers["Error-Msg"] = str(payload.get("errmsg", "ok")).partition(",")[0].strip()
    return response


def _json(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, content_type="application/json")


def _html(page: str, status: int = 200) -> Response:
    return Response(page, status, content_type="text/html; charset=utf-8")


def _redirect(url: str) -> Response:
    return redirect(iri_to_uri(url), 302)


class WeComSimulatorServer(Served[WeComSimulator]):
    """``with WeComSimulatorServer(WeComSimulator.default()) as server: server.url ...``

    Werkzeug's threaded development server on a background thread: for loopback demos and
    tests only. ``url`` serves as ``api_base``, ``login_base``, ``qrconnect_base`` and
    ``open_base``.
    """

    thread_name = "wecom-simulator"

    def stop(self) -> None:
        """Release hung calls, stop accepting requests and close the listening socket."""
        self.simulator.release_hangs()
        super().stop()
