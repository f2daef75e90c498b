"""The simulator as a WSGI app: WeChat's browser pages, its ``/sns/`` API and ``/_sim/``.

See the package docstring for what each route does and for the control API.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, cast
from urllib.parse import unquote_plus, urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.urls import iri_to_uri
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from gateway.simulator import pages
from gateway.simulator.core import (
    SCOPES,
    Call,
    Endpoint,
    Fault,
    SimApp,
    SimState,
    SimUser,
    TicketGone,
)
from gateway.simulator.wire import CONTENT_TYPE, encode, error_payload

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_STATE_RE: Final = re.compile(r"[A-Za-z0-9]{0,128}")
_OA_ORDER: Final = ("appid", "redirect_uri", "response_type", "scope", "state")
_STATE_PROBLEM: Final = (
    "state 参数错误：须为 0 到 128 个 [A-Za-z0-9] 字符",
    "state must be [A-Za-z0-9]{0,128}",
)
_UNKNOWN_USER: Final = ("没有这个测试用户", "unknown user")
_GARBAGE: Final = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
_API_PATHS: Final[Mapping[str, Endpoint]] = {
    "/sns/oauth2/access_token": "access_token",
    "/sns/oauth2/refresh_token": "refresh_token",
    "/sns/auth": "auth",
    "/sns/userinfo": "userinfo",
}
_ROUTES: Final = Map(
    [
        Rule("/", endpoint="index", methods=["GET"]),
        Rule("/connect/qrconnect", endpoint="qrconnect", methods=["GET"]),
        Rule("/connect/zh_CN/htmledition/js/wxLogin.js", endpoint="wxlogin_js", methods=["GET"]),
        Rule("/connect/oauth2/authorize", endpoint="oauth2_authorize", methods=["GET"]),
        Rule("/connect/scan/<ticket>", endpoint="scan", methods=["GET"]),
        Rule("/connect/confirm/<ticket>", endpoint="confirm", methods=["GET", "POST"]),
        Rule("/connect/poll/<ticket>", endpoint="poll", methods=["GET"]),
        *(Rule(path, endpoint="api", methods=["GET", "POST"]) for path in _API_PATHS),
        Rule("/_sim/faults", endpoint="sim_faults", methods=["GET", "POST", "DELETE"]),
        Rule("/_sim/calls", endpoint="sim_calls", methods=["GET", "DELETE"]),
        Rule("/_sim/revoke", endpoint="sim_revoke", methods=["POST"]),
        Rule("/_sim/code", endpoint="sim_code", methods=["POST"]),
        Rule("/_sim/clock", endpoint="sim_clock", methods=["POST"]),
        Rule("/_sim/users", endpoint="sim_users", methods=["GET"]),
        Rule("/_sim/reset", endpoint="sim_reset", methods=["POST"]),
    ],
    strict_slashes=False,
)


class _BadControl(Exception):
    """A malformed control API request; becomes a 400 with the message."""


class Simulator:
    """A simulated WeChat (Open Platform + Official Account + ``/sns/`` API) as a WSGI app.

    Thread-safe: all state sits behind one lock, and a ``delay`` fault sleeps outside it.
    """

    def __init__(
        self,
        apps: Sequence[SimApp],
        users: Sequence[SimUser],
        *,
        code_ttl_website: float = 600,
        code_ttl_oa: float = 300,
        token_ttl: int = 7200,
        refresh_ttl: float = 30 * 86400,
        clock: Callable[[], float] = time.time,
        seed: bytes = b"wechat-gateway simulator",
    ) -> None:
        self.apps: tuple[SimApp, ...] = tuple(apps)
        self.users: tuple[SimUser, ...] = tuple(users)
        self._state = SimState(
            apps,
            users,
            code_ttl_website=code_ttl_website,
            code_ttl_oa=code_ttl_oa,
            token_ttl=token_ttl,
            refresh_ttl=refresh_ttl,
            clock=clock,
            seed=seed,
        )

    @classmethod
    def default(cls, **kwargs: Any) -> Simulator:
        """A ready demo: one website app, one Official Account, both unionid-bound, and
        users whose nicknames exercise the wire quirks (CJK, emoji, control characters,
        CR/LF with a would-be header, quotes and ``/``), plus one snapshot user.
        """
        avatar = "https://thirdwx.qlogo.cn/mmopen/vi_32/{}/132"
        return cls(
            [
                SimApp("wx5e1a2b3c4d5e6f70", "5f2b8e0c1d9a4b7e6c3f0a1b2c3d4e5f", "website"),
                SimApp(
                    "wx9c8b7a6f5e4d3c21", "0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b", "official_account"
                ),
            ],
            [
                SimUser("alice", "Alice", avatar.format("Q3auHgzwzM4AliceK1ZfMHicF8gA")),
                SimUser("zhangsan", "张三\x14🚀", avatar.format("PiajxSqBRaEZhangsan2sO9Xcb0")),
                SimUser(
                    "bob",
                    'Bob "\\o/"\r\nX-WeChat-OpenID: forged',
                    avatar.format("ajNVdqHZLLBobxDw9eHibRXvL1Q"),
                ),
                SimUser(
                    "snapshot",
                    "微信用户",
                    avatar.format("POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXw"),
                    snapshot=True,
                ),
            ],
            **kwargs,
        )

    def app_of_kind(self, kind: Literal["website", "official_account"]) -> SimApp:
        """The first app of that kind (``Simulator.default()`` has one of each)."""
        for app in self.apps:
            if app.kind == kind:
                return app
        raise LookupError(kind)

    # -- Python mirror of the control API --

    def openid(self, app_id: str, user: str) -> str:
        return self._state.openid(app_id, user)

    def unionid(self, user: str) -> str:
        """The user's unionid; apps that are not unionid-bound never send it."""
        return self._state.unionid(user)

    def mint_code(self, app_id: str, user: str, scope: str | None = None) -> str:
        """A fresh code, as if ``user`` had just authorized ``app_id`` in the browser."""
        return self._state.mint_code(app_id, user, scope)

    def add_fault(self, fault: Fault) -> None:
        self._state.add_fault(fault)

    def clear_faults(self) -> None:
        self._state.clear_faults()

    def revoke(self, user: str) -> None:
        self._state.revoke(user)

    def calls(self, endpoint: Endpoint | None = None) -> list[Call]:
        return [c for c in self._state.calls() if endpoint in (None, c.endpoint)]

    def clear_calls(self) -> None:
        self._state.clear_calls()

    def advance_clock(self, seconds: float) -> None:
        self._state.advance_clock(seconds)

    def reset(self) -> None:
        self._state.reset()

    # -- WSGI --

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
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
        openids = {
            (a.app_id, u.key): self.openid(a.app_id, u.key) for a in self.apps for u in self.users
        }
        lang = pages.page_lang(request.environ)
        return _html(pages.index_page(self.apps, self.users, openids, lang))

    def _qrconnect(self, request: Request) -> Response:
        args = request.args
        # wxLogin.js's iframe: no response_type, and a compact page that sends the top
        # window to the callback unless the embedding page asked for self_redirect=true.
        embed = (
            pages.Embed(top=args.get("self_redirect") != "true", style=args.get("style", ""))
            if args.get("login_type") == "jssdk"
            else None
        )

        lang = pages.page_lang(request.environ, embedded=embed is not None)

        def refuse(message: pages.Said) -> Response:
            return _html(pages.error_page(message, lang=lang, embed=embed))

        app = self._state.apps.get(args.get("appid", ""))
        if app is None:
            return refuse(("AppID 参数错误", "invalid appid"))
        if args.get("scope") != "snsapi_login" or app.kind != "website":
            return refuse(("Scope 参数错误或没有 Scope 权限", "invalid scope"))
        if embed is None and args.get("response_type") != "code":
            return refuse(("response_type 参数错误", "invalid response_type"))
        problem = _redirect_uri_problem(app, args.get("redirect_uri", ""))
        if problem:
            return refuse(problem)
        state = args.get("state", "")
        if not _STATE_RE.fullmatch(state):
            return refuse(_STATE_PROBLEM)
        ticket = self._state.open_ticket(app.app_id, args["redirect_uri"], state, "snsapi_login")
        chosen = args.get("sim_user")
        if chosen is not None and chosen in self._state.users:
            return _redirect(self._state.confirm(ticket, chosen))
        confirm_url = f"{request.host_url}connect/confirm/{ticket}"
        people = [user for user in self.users if not user.snapshot]
        return _html(pages.qr_page(app, ticket, confirm_url, people, lang, embed))

    def _wxlogin_js(self, request: Request) -> Response:
        """WeChat's wxLogin.js (``res.wx.qq.com``), embedding this simulator's QR page."""
        script = pages.wxlogin_js(f"{request.host_url}connect/qrconnect")
        return Response(script, 200, content_type="application/javascript; charset=utf-8")

    def _oauth2_authorize(self, request: Request) -> Response:
        args = request.args
        lang = pages.page_lang(request.environ)

        def refuse(message: pages.Said, errcode: int | None = None) -> Response:
            return _html(pages.error_page(message, errcode, lang=lang))

        app_id = args.get("appid", "")
        if not app_id:
            return refuse(("appid 参数错误", "appid missing"), 10012)
        app = self._state.apps.get(app_id)
        if app is None:
            return refuse(("appid 参数错误", "invalid appid"), 10012)
        if app.kind != "official_account":
            return refuse(
                (
                    "不支持微信开放平台的Appid 请使用公众号Appid",
                    "an Open Platform appid cannot be used here: use an Official Account's",
                ),
                10016,
            )
        names = [
            unquote_plus(part.partition("=")[0])
            for part in request.query_string.decode("latin-1").split("&")
            if part
        ]
        ours = [name for name in names if name in _OA_ORDER]
        if ours != [name for name in _OA_ORDER if name in ours] or len(set(ours)) != len(ours):
            return refuse(
                (
                    "参数顺序错误：须依次为 appid, redirect_uri, response_type, scope, state",
                    "parameters must come in the order "
                    "appid, redirect_uri, response_type, scope, state",
                )
            )
        problem = _redirect_uri_problem(app, args.get("redirect_uri", ""))
        if problem:
            return refuse(problem, 10011 if not args.get("redirect_uri") else 10003)
        if args.get("response_type") != "code":
            return refuse(("response_type 参数错误", "invalid response_type"))
        scope = args.get("scope", "")
        if not scope:
            return refuse(("scope 参数错误", "scope missing"), 10010)
        if scope not in SCOPES["official_account"]:
            return refuse(("scope 参数错误或没有 scope 权限", "invalid scope"), 10005)
        state = args.get("state", "")
        if not _STATE_RE.fullmatch(state):
            return refuse(_STATE_PROBLEM)
        ticket = self._state.open_ticket(app.app_id, args["redirect_uri"], state, scope)
        chosen = args.get("sim_user")
        if chosen is not None and chosen in self._state.users:
            return _redirect(self._state.confirm(ticket, chosen))
        return _html(pages.oauth2_page(app, ticket, self.users, scope, lang))

    def _scan(self, request: Request, ticket: str) -> Response:
        """A choice made by link: ``?user=KEY`` authorizes, ``?cancel=1`` declines."""
        user = request.args.get("user")
        lang = pages.page_lang(request.environ)
        try:
            if request.args.get("cancel"):
                return _redirect(self._state.cancel(ticket))
            if user is None or user not in self._state.users:
                return _html(pages.error_page(_UNKNOWN_USER, lang=lang), 400)
            return _redirect(self._state.confirm(ticket, user))
        except TicketGone:
            return _html(pages.gone_page(lang), 410)

    def _confirm(self, request: Request, ticket: str) -> Response:
        """The phone side of the QR flow; the desktop page learns the outcome by polling."""
        lang = pages.page_lang(request.environ)
        try:
            if request.method == "GET":
                app = self._state.apps[self._state.mark_scanned(ticket)]
                people = [user for user in self.users if not user.snapshot]
                return _html(pages.confirm_page(app, ticket, people, lang))
            if request.form.get("cancel"):
                self._state.cancel(ticket)
                return _html(pages.confirmed_page(False, lang))
            user = request.form.get("user", "")
            if user not in self._state.users:
                return _html(pages.error_page(_UNKNOWN_USER, lang=lang), 400)
            self._state.confirm(ticket, user)
            return _html(pages.confirmed_page(True, lang))
        except TicketGone:
            return _html(pages.gone_page(lang), 410)

    def _poll(self, request: Request, ticket: str) -> Response:
        status, target = self._state.poll(ticket)
        return _json({"status": status, "redirect": target})

    # -- the WeChat API --

    def _api(self, request: Request) -> Response:
        endpoint = _API_PATHS[request.path.rstrip("/")]
        params = request.args.to_dict()
        for key, value in request.form.items():
            params.setdefault(key, value)
        fault = self._state.take_fault(endpoint)
        outcome: int | str
        if fault is None or fault.mode == "delay":
            payload = getattr(self._state, endpoint)(params)
            outcome = cast(int, payload.get("errcode", 0))
            response = _wechat(payload)
        elif fault.mode == "errcode":
            outcome = fault.errcode
            response = _wechat(error_payload(fault.errcode))
        elif fault.mode == "http_status":
            outcome = fault.mode
            response = Response(_GARBAGE, fault.status, content_type="text/html")
        elif fault.mode == "garbage":
            outcome = fault.mode
            body = _GARBAGE if fault.body is None else fault.body.encode("utf-8")
            response = Response(body, 200, content_type=CONTENT_TYPE)
        else:
            self._state.record_call(endpoint, params, fault.mode)
            _drop_connection(request.environ)
        self._state.record_call(endpoint, params, outcome)
        if fault is not None and fault.mode == "delay":
            # After the work is done, like a reply lost on the way back: the code is spent.
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
            fault = Fault(**{k: v for k, v in body.items() if k in Fault.__dataclass_fields__})
        except (TypeError, ValueError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        self._state.add_fault(fault)
        return _json({"ok": True})

    def _sim_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._state.clear_calls()
            return _json({"ok": True})
        wanted = request.args.get("endpoint")
        calls = [
            {"endpoint": c.endpoint, "params": dict(c.params), "outcome": c.outcome, "at": c.at}
            for c in self._state.calls()
            if wanted in (None, c.endpoint)
        ]
        return _json({"calls": calls})

    def _sim_revoke(self, request: Request) -> Response:
        try:
            self._state.revoke(str(_control_body(request).get("user", "")))
        except (KeyError, _BadControl):
            return _json({"error": "unknown user"}, 400)
        return _json({"ok": True})

    def _sim_code(self, request: Request) -> Response:
        try:
            body = _control_body(request)
            app_id = str(body.get("app_id") or self.app_of_kind("website").app_id)
            user = str(body.get("user", ""))
            scope = body.get("scope")
            code = self._state.mint_code(app_id, user, None if scope is None else str(scope))
        except (ValueError, LookupError, _BadControl) as exc:
            return _json({"error": str(exc)}, 400)
        unionid = self.unionid(user) if self._state.apps[app_id].unionid_bound else None
        return _json({"code": code, "openid": self.openid(app_id, user), "unionid": unionid})

    def _sim_clock(self, request: Request) -> Response:
        try:
            seconds = _control_body(request).get("advance")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise _BadControl("advance must be a number of seconds")
        except _BadControl as exc:
            return _json({"error": str(exc)}, 400)
        self._state.advance_clock(float(seconds))
        return _json({"ok": True, "now": self._state.now()})

    def _sim_users(self, request: Request) -> Response:
        return _json(
            {
                "apps": [
                    {"app_id": a.app_id, "kind": a.kind, "unionid_bound": a.unionid_bound}
                    for a in self.apps
                ],
                "users": [
                    {
                        "key": u.key,
                        "nickname": u.nickname,
                        "avatar": u.avatar,
                        "snapshot": u.snapshot,
                        "unionid": self.unionid(u.key),
                        "openids": {a.app_id: self.openid(a.app_id, u.key) for a in self.apps},
                    }
                    for u in self.users
                ],
            }
        )

    def _sim_reset(self, request: Request) -> Response:
        self._state.reset()
        return _json({"ok": True})


def _redirect_uri_problem(app: SimApp, uri: str) -> pages.Said | None:
    if not uri:
        return "redirect_uri 参数错误", "redirect_uri missing"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "redirect_uri 参数错误：须为完整的 http(s) 地址",
            "redirect_uri must be an absolute http(s) URL",
        )
    if app.callback_domain is not None and parts.hostname != app.callback_domain:
        return (
            "redirect_uri 域名与后台配置不一致",
            "redirect_uri: the host is not the app's callback domain",
        )
    return None


def _drop_connection(environ: WSGIEnvironment) -> NoReturn:
    """Close the client connection without a reply (an RST where the server allows it).

    Werkzeug's server exposes the socket as ``werkzeug.socket``; with linger 0 the close is
    abortive. Raising ``ConnectionResetError`` makes Werkzeug treat the request as dropped
    rather than answering 500. Other servers only see the exception.
    """
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


def _fault_json(fault: Fault) -> dict[str, object]:
    return {name: getattr(fault, name) for name in Fault.__dataclass_fields__}


def _wechat(payload: Mapping[str, object]) -> Response:
    return Response(encode(payload), 200, content_type=CONTENT_TYPE)


def _json(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, content_type="application/json")


def _html(page: str, status: int = 200) -> Response:
    return Response(page, status, content_type="text/html; charset=utf-8")


def _redirect(url: str) -> Response:
    return redirect(iri_to_uri(url), 302)
