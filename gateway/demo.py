"""``wechat-gateway demo``: the whole product on loopback, no WeChat account needed.

Three things start in one process tree:

- the built-in WeChat and WeCom simulators on one port (QR pages, test identities and
  staff, the ``/sns/`` and ``/cgi-bin/`` APIs), so the login page offers both;
- a sample upstream app that shows the identity headers it received, with a live
  WebSocket panel: its ``/ws`` is a small WebSocket server of its own (a second upstream
  entry) that echoes what the user types and pushes a clock tick every second, each
  message naming the user it read from the upgrade request's identity headers;
- the gateway itself, on gunicorn exactly as ``serve`` runs it, in front of the app.

The simulator and the sample app's two servers run on threads of the gunicorn master; the
gateway's worker is forked from it and talks to them over loopback sockets like it would
to the real WeChat and a real app.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import unquote

import jwt
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gateway.config import (
    LoginSettings,
    OfficialAccountSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    UpstreamSettings,
    WeChatSettings,
    WeComSettings,
)
from gateway.identity.compose import ASSERTION, GROUPS
from gateway.identity.headers import (
    APPID,
    AVATAR,
    CORPID,
    DEPARTMENTS,
    NICKNAME,
    OPENID,
    PROVIDER,
    UNIONID,
    USERID,
)
from gateway.simulator import Simulator
from gateway.simulator.pages import visible
from gateway.simulator.wecom import DEMO_AGENT_ID, WeComSimulator, WeComSimulatorServer
from gateway.web.pages import stylesheet

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_IDENTITY = (
    PROVIDER,
    OPENID,
    UNIONID,
    APPID,
    USERID,
    CORPID,
    DEPARTMENTS,
    NICKNAME,
    AVATAR,
    GROUPS,
)
#: The sample app's WebSocket, served by its own small server behind a second upstream entry.
LIVE_PATH = "/ws"

# The sample app looks like the gateway's own pages (their stylesheet, then a few rules for
# what only it has: a wider card, tables, the live panel's form), so the demo reads as one
# product. Element ids and data attributes are what the browser tests read.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sample app: who am I?</title>
<style>{style}</style></head>
<body>
<header class="brand"><p>Sample app</p></header>
<main class="sample">
<p class="status">An app with no login of its own, behind wechat-gateway</p>
<h1 id="greeting">Hello, {nickname}!</h1>
<p class="lead">This page has no login code: it only reads the identity headers the gateway
added to the request.</p>
<table>
<tr><th>Header</th><th>Value as received</th></tr>
{rows}
</table>
<p class="check">Signed assertion (<code>X-WeChat-Assertion</code>), checked by this app
against the gateway's <a href="/_gateway/jwks.json">JWKS</a>:
<strong id="assertion" data-verified="{verified}">{assertion}</strong></p>
<p>You asked for <code id="path">{path}</code>.</p>
<h2>Live WebSocket</h2>
<p class="lead">This panel talks to the app over a WebSocket (<code>{live_path}</code>),
opened through the gateway with the same sign-in: the app reads who you are from the
identity headers of the upgrade request. It echoes what you send and ticks every second;
sign out in another tab and the gateway closes it.</p>
<table>
<tr><th>Status</th><td id="ws-status">connecting&hellip;</td></tr>
<tr><th>Clock</th><td id="ws-clock"><em>no tick yet</em></td></tr>
</table>
<form id="ws-form" data-path="{live_path}"><p><input id="ws-input" autocomplete="off"
placeholder="Say something" aria-label="Message"> <button id="ws-send">Send</button></p></form>
<ul id="ws-log"></ul>
<div class="actions"><a class="button" id="logout" href="/_gateway/logout">Sign out</a>
<a class="plain" href="/_gateway/userinfo">/_gateway/userinfo</a></div>
</main>
<footer><p>wechat-gateway demo</p></footer>
<script>{script}</script>
</body></html>
"""

_SAMPLE_STYLE = """
main.sample { max-width: 48rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .25rem; }
.lead { margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { white-space: nowrap; color: var(--muted); font-weight: 600; }
td { overflow-wrap: anywhere; }
code { font: .85em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.check { margin-top: 1.25rem; }
#assertion { overflow-wrap: anywhere; }
#assertion[data-verified="yes"] { color: var(--link); }
#ws-form p { display: flex; gap: .5rem; margin-top: 1rem; }
#ws-input { flex: 1; min-width: 0; font: inherit; padding: .55rem .75rem; color: var(--fg);
  background: var(--bg); border: 1px solid var(--line); border-radius: 8px; }
#ws-send { font: inherit; font-weight: 600; padding: .55rem 1.25rem; border: 0;
  border-radius: 8px; background: var(--accent); color: #fff; cursor: pointer; }
#ws-send:hover { filter: brightness(1.1); }
#ws-input:focus-visible, #ws-send:focus-visible { outline: 3px solid var(--fg);
  outline-offset: 2px; }
#ws-log { list-style: none; padding: 0; margin: .5rem 0 0; color: var(--muted);
  font-size: .9rem; }
#ws-log li { padding: .3rem 0; border-bottom: 1px dashed var(--line); overflow-wrap: anywhere; }
.actions { align-items: center; }
.actions a.plain { font-size: .9rem; text-underline-offset: .3em; }
"""

# The live panel's script, inserted whole (not through str.format). The WebSocket is opened
# on the page's own origin, so it goes through the gateway like the page did.
_LIVE_SCRIPT = """
(function () {
  var status = document.getElementById("ws-status");
  var clock = document.getElementById("ws-clock");
  var log = document.getElementById("ws-log");
  var input = document.getElementById("ws-input");
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var form = document.getElementById("ws-form");
  var ws = new WebSocket(scheme + location.host + form.getAttribute("data-path"));
  var opened = false;
  ws.onopen = function () { opened = true; status.textContent = "connected"; };
  ws.onmessage = function (event) {
    var message = JSON.parse(event.data);
    if (message.kind === "hello") {
      status.textContent = "connected as " + message.nickname;
    } else if (message.kind === "tick") {
      clock.textContent = message.time + " (for " + message.nickname + ")";
    } else if (message.kind === "echo") {
      var item = document.createElement("li");
      item.textContent = message.nickname + " said: " + message.text;
      log.insertBefore(item, log.firstChild);
    }
  };
  ws.onclose = function (event) {
    status.textContent = opened
      ? "closed (" + event.code + (event.reason ? ": " + event.reason : "") + ")"
      : "could not connect: open this page through the gateway";
  };
  form.onsubmit = function (event) {
    event.preventDefault();
    if (ws.readyState === WebSocket.OPEN && input.value) {
      ws.send(input.value);
      input.value = "";
    }
  };
})();
"""


class AssertionCheck:
    """What an app that verifies rather than trusts does with ``X-WeChat-Assertion``: the
    signature against the gateway's JWKS (fetched once, again for an unknown ``kid``), the
    algorithm pinned to ES256, issuer, audience and expiry (docs/verifying-identity.md)."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url
        self.keys = jwt.PyJWKClient(f"{public_url}/_gateway/jwks.json", cache_keys=True)

    def __call__(self, token: str | None) -> tuple[bool, str]:
        if not token:
            return False, "no assertion received"
        try:
            key = self.keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=self.public_url,
                issuer=self.public_url,
            )
        except jwt.PyJWTError as exc:
            return False, f"not verified: {exc}"
        left = int(claims["exp"] - time.time())
        return True, f"verified: signed by the gateway for {claims['sub']}, valid {left} s more"


_checks: list[AssertionCheck] = []


def sample_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """An app with no login of its own: it shows the identity headers it received, and
    whether the gateway's signed assertion checks out (when the demo told it where)."""
    token = environ.get("HTTP_" + ASSERTION.upper().replace("-", "_"))
    verified, assertion = _checks[0](token) if _checks else (False, "not checked")
    rows = []
    for name in _IDENTITY:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        shown = "<em>absent</em>" if value is None else f"<code>{escape(value)}</code>"
        cell = f'<td data-header="{escape(name)}">{shown}</td>'
        rows.append(f"<tr><th>{escape(name)}</th>{cell}</tr>")
    nickname = unquote(environ.get("HTTP_X_WECHAT_NICKNAME", "stranger"))
    path = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    body = _PAGE.format(
        style=stylesheet() + _SAMPLE_STYLE,
        nickname=escape(visible(nickname)),
        rows="\n".join(rows),
        path=escape(path),
        verified="yes" if verified else "no",
        assertion=escape(assertion),
        live_path=LIVE_PATH,
        script=_LIVE_SCRIPT,
    )
    data = body.encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The gateway's access log already shows every request."""


def _start_sample_app() -> BaseWSGIServer:
    server = make_server("127.0.0.1", 0, sample_app, threaded=True, request_handler=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="sample-app", daemon=True).start()
    return server


def live_socket(connection: ServerConnection) -> None:
    """The sample app's WebSocket: the user it was opened for, echoes, a tick a second.

    Like the page, it has no login of its own: the user is whoever the identity headers
    of the upgrade request (added by the gateway) name.
    """
    assert connection.request is not None  # the handshake is done before the handler runs
    headers = connection.request.headers
    who = {
        "nickname": unquote(headers.get(NICKNAME, "stranger")),
        "openid": headers.get(OPENID),
        "userid": headers.get(USERID),
    }

    def send(kind: str, **fields: str) -> None:
        connection.send(json.dumps({"kind": kind, **who, **fields}, ensure_ascii=False))

    try:
        send("hello")
        next_tick = time.monotonic()
        while True:
            try:
                message = connection.recv(timeout=max(0.0, next_tick - time.monotonic()))
            except TimeoutError:
                send("tick", time=time.strftime("%H:%M:%S"))
                next_tick = max(next_tick + 1.0, time.monotonic())  # no burst after a stall
                continue
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            send("echo", text=text[:1000])
    except ConnectionClosed:
        return


def _start_live_socket() -> Server:
    # Its own logs stay quiet: the gateway's access log shows each tunnel (status 101).
    quiet = logging.getLogger("gateway.demo.live")
    quiet.setLevel(logging.CRITICAL)
    server = serve(live_socket, "127.0.0.1", 0, logger=quiet)
    threading.Thread(target=server.serve_forever, name="sample-live", daemon=True).start()
    return server


def demo_settings(
    port: int,
    simulator_url: str,
    app_url: str,
    live_url: str,
    simulator: Simulator,
    wecom: WeComSimulator | None = None,
) -> Settings:
    """The gateway in front of the sample app (``app_url``) and, at ``/ws``, its WebSocket
    server (``live_url``), with the simulator as WeChat (and ``wecom``, on the same URL, as
    WeCom)."""
    website = next(app for app in simulator.apps if app.kind == "website")
    official = next(app for app in simulator.apps if app.kind == "official_account")
    wecom_settings = None
    if wecom is not None:
        corp = wecom.corp()
        app = wecom.app(DEMO_AGENT_ID)
        wecom_settings = WeComSettings(
            corp_id=corp.corp_id,
            agent_id=app.agent_id,
            secret=app.secret,
            api_base=simulator_url,
            login_base=simulator_url,
            qrconnect_base=simulator_url,
            open_base=simulator_url,
        )
    return Settings(
        wecom=wecom_settings,
        # The page offering both providers embeds WeChat's QR with the simulator's script.
        login=LoginSettings(wxlogin_js=f"{simulator_url}/connect/zh_CN/htmledition/js/wxLogin.js"),
        public_url=f"http://127.0.0.1:{port}",
        wechat=WeChatSettings(
            app_id=website.app_id,
            app_secret=website.app_secret,
            open_base=simulator_url,
            api_base=simulator_url,
            lang="en",
            timeout=5.0,
            # Pages opened inside WeChat (User-Agent "MicroMessenger") use this app instead.
            official_account=OfficialAccountSettings(official.app_id, official.app_secret),
        ),
        session=SessionSettings(secret=secrets.token_urlsafe(32), secure=False),
        upstreams=(
            UpstreamSettings(prefix="/", url=app_url),
            UpstreamSettings(prefix=LIVE_PATH, url=live_url),
        ),
        server=ServerSettings(bind=f"127.0.0.1:{port}", workers=1),
    )


def run_demo(port: int) -> int:
    from gateway.server.serve import check_port_free, serve  # noqa: PLC0415 - when serving

    busy = check_port_free(f"127.0.0.1:{port}")
    if busy is not None:  # one clear line, before anything is started or printed
        print(f"wechat-gateway demo: {busy} (choose another with --port)", file=sys.stderr)
        return 1
    simulator = Simulator.default()
    staff = WeComSimulator.default(
        trusted_domains=(f"127.0.0.1:{port}", f"localhost:{port}"), fallback=simulator
    )
    wechat = WeComSimulatorServer(staff).start()
    app = _start_sample_app()
    live_port = _start_live_socket().socket.getsockname()[1]
    settings = demo_settings(
        port,
        wechat.url,
        f"http://127.0.0.1:{app.server_port}",
        f"http://127.0.0.1:{live_port}",
        simulator,
        staff,
    )
    _checks[:] = [AssertionCheck(settings.public_url)]
    print(
        f"""
wechat-gateway demo
  simulator         {wechat.url}   (WeChat and WeCom)
  sample app        http://127.0.0.1:{app.server_port}   (no login of its own)
  sample WebSocket  ws://127.0.0.1:{live_port}     (the app's {LIVE_PATH}: echo and clock)
  gateway           {settings.public_url}

Open {settings.public_url}/ in your browser, then sign in with WeChat (pick a test
identity) or WeCom (pick a staff member) on the simulated QR pages. The page's live
panel talks to the app over a WebSocket, through the gateway. Press Ctrl+C to stop.
""",
        flush=True,
    )
    return serve(settings)
