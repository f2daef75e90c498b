"""HTML for the simulator's browser pages: QR login, phone confirmation, consent, errors.

Pages are small and self-contained (no external resources, inline CSS, one tiny script on
the QR page). Every value echoed back is HTML-escaped; control characters in nicknames are
shown as U+FFFD. Every action is a plain link or form, so the flows work without JS.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import quote

import segno

from gateway.simulator.core import SimApp, SimUser

_STYLE: Final = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
margin:0;background:#f2f2f2;color:#222}
main{max-width:26rem;margin:2rem auto;background:#fff;padding:1.5rem;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.1)}
h1{font-size:1.25rem;margin:0 0 1rem;text-align:center}
p{line-height:1.5}.muted{color:#777;font-size:.875rem}.muted a{word-break:break-all}
.qr{text-align:center}
.qr svg{width:12rem;height:12rem}
.btn{display:block;box-sizing:border-box;width:100%;margin:.5rem 0;padding:.7rem;
border:0;border-radius:4px;background:#07c160;color:#fff;text-align:center;
text-decoration:none;font-size:1rem;cursor:pointer}
.btn.secondary{background:#eee;color:#333}form{margin:0}
code{background:#f5f5f5;padding:0 .25rem;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:.8rem}
td,th{border-bottom:1px solid #eee;padding:.25rem;text-align:left;word-break:break-all}
"""

_TEXT: Final[Mapping[str, Mapping[str, str]]] = {
    "cn": {
        "title": "微信登录",
        "scan": "请使用微信扫描二维码登录",
        "or": "没有手机时 可选择一个测试身份",
        "as": "以 {name} 身份扫码",
        "cancel": "取消登录",
        "scanned": "扫码成功 请在手机上确认登录",
        "expired": "二维码已失效 请刷新页面",
    },
    "en": {
        "title": "Log in with WeChat",
        "scan": "Scan the QR code with WeChat",
        "or": "No phone at hand? Pick a test identity:",
        "as": "Scan as {name}",
        "cancel": "Cancel",
        "scanned": "Scanned: confirm on your phone",
        "expired": "This QR code has expired: reload the page",
    },
}


def _e(text: str) -> str:
    shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return html.escape(shown, quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _user_links(ticket_id: str, users: Sequence[SimUser], label: str) -> str:
    return "".join(
        f'<a class="btn" href="/connect/scan/{quote(ticket_id)}?user={quote(user.key)}">'
        f"{_e(label.format(name=user.nickname))}</a>"
        for user in users
    )


def _cancel_link(ticket_id: str, label: str) -> str:
    return (
        f'<a class="btn secondary" href="/connect/scan/{quote(ticket_id)}?cancel=1">{_e(label)}</a>'
    )


def error_page(message: str, errcode: int | None = None) -> str:
    """WeChat's "Oops" page: the authorize request was refused and nothing redirects."""
    code = f'<p class="muted">错误码 errcode: <code>{errcode}</code></p>' if errcode else ""
    return _page(
        "微信登录 - 出错了",
        f'<h1>出错了 / Oops</h1><p id="error">{_e(message)}</p>{code}',
    )


def gone_page() -> str:
    return _page(
        "二维码已失效",
        "<h1>二维码已失效 / QR code expired</h1>"
        "<p>This login request has expired or was already used. Go back and start again.</p>",
    )


def qr_page(
    app: SimApp, ticket_id: str, confirm_url: str, users: Sequence[SimUser], lang: str
) -> str:
    """The desktop QR page. It polls for a confirmation made on a phone."""
    text = _TEXT.get(lang, _TEXT["cn"])
    qr_svg = segno.make(confirm_url, error="m").svg_inline(scale=4, border=4, omitsize=True)
    poll_url = json.dumps(f"/connect/poll/{quote(ticket_id)}").replace("<", "\\u003c")
    messages = json.dumps({"scanned": text["scanned"], "expired": text["expired"]})
    messages = messages.replace("<", "\\u003c")
    script = (
        "(function(){var u=" + poll_url + ",m=" + messages + ";"
        "function p(){fetch(u,{cache:'no-store'}).then(function(r){return r.json()})"
        ".then(function(d){if(d.redirect){location.href=d.redirect;return}"
        "if(m[d.status]){document.getElementById('status').textContent=m[d.status]}"
        "if(d.status!=='expired'){setTimeout(p,1000)}})"
        ".catch(function(){setTimeout(p,2000)})}setTimeout(p,1000)})();"
    )
    return _page(
        text["title"],
        f"<h1>{_e(text['title'])}</h1>"
        f'<p class="muted">AppID <code>{_e(app.app_id)}</code></p>'
        f'<div class="qr">{qr_svg}</div>'
        f'<p id="status" style="text-align:center">{_e(text["scan"])}</p>'
        f'<p class="muted">Phone link: <a href="{_e(confirm_url)}">{_e(confirm_url)}</a></p>'
        f"<p>{_e(text['or'])}</p>"
        f"{_user_links(ticket_id, users, text['as'])}"
        f"{_cancel_link(ticket_id, text['cancel'])}"
        f"<script>{script}</script>",
    )


def confirm_page(app: SimApp, ticket_id: str, users: Sequence[SimUser]) -> str:
    """What the phone shows after scanning: who are you, and do you allow the login."""
    forms = "".join(
        f'<form method="post" action="/connect/confirm/{quote(ticket_id)}">'
        f'<input type="hidden" name="user" value="{_e(user.key)}">'
        f'<button class="btn" type="submit">确认登录 Log in as {_e(user.nickname)}</button>'
        "</form>"
        for user in users
    )
    decline = (
        f'<form method="post" action="/connect/confirm/{quote(ticket_id)}">'
        '<input type="hidden" name="cancel" value="1">'
        '<button class="btn secondary" type="submit">取消 Decline</button></form>'
    )
    return _page(
        "确认登录",
        "<h1>确认登录 / Confirm login</h1>"
        f"<p>Log in to the website of app <code>{_e(app.app_id)}</code> on your computer?</p>"
        f"{forms}{decline}",
    )


def confirmed_page(accepted: bool) -> str:
    if accepted:
        return _page(
            "已确认", "<h1>已确认 / Confirmed</h1><p>You can go back to your computer.</p>"
        )
    return _page("已取消", "<h1>已取消 / Declined</h1><p>The login was cancelled.</p>")


def oauth2_page(app: SimApp, ticket_id: str, users: Sequence[SimUser], scope: str) -> str:
    """The in-WeChat page: a chooser for ``snsapi_base``, a consent page for userinfo."""
    if scope == "snsapi_base":
        intro = (
            '<h1>Who is using WeChat?</h1><p class="muted">In real WeChat this step is '
            "silent: the phone's user is known. Add <code>&amp;sim_user=KEY</code> after "
            "<code>state</code> to skip it.</p>"
        )
        return _page("微信", intro + _user_links(ticket_id, users, "{name}"))
    intro = (
        "<h1>授权 / Authorize</h1>"
        f"<p>App <code>{_e(app.app_id)}</code> asks for your nickname and avatar.</p>"
    )
    return _page(
        "微信授权",
        intro
        + _user_links(ticket_id, users, "允许 Allow as {name}")
        + _cancel_link(ticket_id, "拒绝 Decline"),
    )


def index_page(
    apps: Sequence[SimApp], users: Sequence[SimUser], openids: Mapping[tuple[str, str], str]
) -> str:
    """What the simulator knows: apps, users and each user's openid per app."""
    head = "".join(f"<th>{_e(app.app_id)}<br>{_e(app.kind)}</th>" for app in apps)
    rows = "".join(
        f"<tr><td>{_e(user.key)}{' (snapshot)' if user.snapshot else ''}<br>"
        f"{_e(user.nickname)}</td>"
        + "".join(f"<td><code>{_e(openids[app.app_id, user.key])}</code></td>" for app in apps)
        + "</tr>"
        for user in users
    )
    return _page(
        "WeChat simulator",
        "<h1>WeChat simulator</h1><p>A stand-in for open.weixin.qq.com and api.weixin.qq.com, "
        "for local demos and tests. Openids per app:</p>"
        f"<table><tr><th>user</th>{head}</tr>{rows}</table>",
    )
