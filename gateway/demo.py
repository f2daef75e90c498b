"""``wechat-gateway demo``: the whole product on loopback, no WeChat account needed.

Three things start in one process tree:

- the built-in WeChat simulator (QR page, test identities, the ``/sns/`` API);
- a sample upstream app that shows the identity headers it received;
- the gateway itself, on gunicorn exactly as ``serve`` runs it, in front of the app.

The simulator and the sample app run on threads of the gunicorn master; the gateway's
worker is forked from it and talks to both over loopback sockets like it would to the
real WeChat and a real app.
"""

from __future__ import annotations

import secrets
import threading
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import unquote

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gateway.config import (
    OfficialAccountSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    UpstreamSettings,
    WeChatSettings,
)
from gateway.identity.headers import APPID, AVATAR, NICKNAME, OPENID, UNIONID
from gateway.simulator import Simulator, SimulatorServer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_IDENTITY = (OPENID, UNIONID, APPID, NICKNAME, AVATAR)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sample app: who am I?</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto;
  padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }} th {{ white-space: nowrap; }}
th, td {{ text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #ddd;
  vertical-align: top; }}
td {{ overflow-wrap: anywhere; }} code {{ font-size: .85em; }} img {{ border-radius: 8px; }}
</style></head>
<body>
<h1 id="greeting">Hello, {nickname}!</h1>
<p>This page is a plain app behind wechat-gateway. It has no login code: it only reads the
identity headers the gateway added to the request.</p>
<table>
<tr><th>Header</th><th>Value as received</th></tr>
{rows}
</table>
<p>You asked for <code id="path">{path}</code>.</p>
<p><a href="/_gateway/userinfo">/_gateway/userinfo</a> &middot;
<a id="logout" href="/_gateway/logout">Sign out</a></p>
</body></html>
"""


def sample_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """An app with no login of its own: it shows the identity headers it received."""
    rows = []
    for name in _IDENTITY:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        shown = "<em>absent</em>" if value is None else f"<code>{escape(value)}</code>"
        cell = f'<td data-header="{escape(name)}">{shown}</td>'
        rows.append(f"<tr><th>{escape(name)}</th>{cell}</tr>")
    nickname = unquote(environ.get("HTTP_X_WECHAT_NICKNAME", "stranger"))
    path = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    body = _PAGE.format(nickname=escape(nickname), rows="\n".join(rows), path=escape(path))
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


def demo_settings(port: int, simulator_url: str, app_url: str, simulator: Simulator) -> Settings:
    website = next(app for app in simulator.apps if app.kind == "website")
    official = next(app for app in simulator.apps if app.kind == "official_account")
    return Settings(
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
        upstreams=(UpstreamSettings(prefix="/", url=app_url),),
        server=ServerSettings(bind=f"127.0.0.1:{port}", workers=1),
    )


def run_demo(port: int) -> None:
    from gateway.server.serve import serve  # noqa: PLC0415 - gunicorn only when serving

    simulator = Simulator.default()
    wechat = SimulatorServer(simulator).start()
    app = _start_sample_app()
    settings = demo_settings(port, wechat.url, f"http://127.0.0.1:{app.server_port}", simulator)
    print(
        f"""
wechat-gateway demo
  WeChat simulator  {wechat.url}
  sample app        http://127.0.0.1:{app.server_port}   (no login of its own)
  gateway           {settings.public_url}

Open {settings.public_url}/ in your browser, then pick a test identity on the
simulated WeChat QR page. Press Ctrl+C to stop.
""",
        flush=True,
    )
    serve(settings)
