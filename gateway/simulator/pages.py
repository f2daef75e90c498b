"""HTML for the simulator's browser pages: QR login, phone confirmation, consent, errors,
and the ``wxLogin.js`` script that embeds the QR page in another site's page.

Pages are small and self-contained (no external resources, inline CSS, one tiny script on
the QR page). Every value echoed back is HTML-escaped; control characters in nicknames
(and line separators and bidi controls) are shown as escapes, ``\\x14`` or ``\\r\\n``, so a
test identity shows what it holds. Every action is a plain link or form, so the flows work
without JS.

Each page speaks Chinese or English, chosen as the gateway's own pages choose
(``page_lang``): ``?lang=`` (WeChat's ``cn``/``en``), then the browser's
``Accept-Language``, then English.

An embedded QR page (``login_type=jssdk``, inside the iframe ``wxLogin.js`` creates) is
compact, to fit WeChat's 300x400 frame, and, like WeChat's, sends the *top* window to the
callback unless the embedding page asked for ``self_redirect: true``.
"""

from __future__ import annotations

import html
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import segno

from gateway.simulator.core import SimApp, SimUser
from gateway.web.i18n import HTML_LANG, Lang, negotiate_lang

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: A message in both languages: (Chinese, English).
Said = tuple[str, str]

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

# Inside wxLogin.js's 300x400 iframe: no card, no page margins, everything smaller.
_EMBED_STYLE: Final = """
body.embed{background:transparent;overflow:hidden}
body.embed main{max-width:none;margin:0;padding:.75rem;background:transparent;
border-radius:0;box-shadow:none}
body.white{color:#fff}body.white .muted{color:#ccc}
.embed h1{font-size:1rem;margin:0 0 .25rem}
.embed p{margin:.25rem 0;font-size:.8rem;line-height:1.35;text-align:center}
.embed .qr{display:block;width:12rem;height:12rem;margin:.25rem auto}
.embed .qr svg{width:12rem;height:12rem}
.embed .people{display:grid;grid-template-columns:1fr 1fr;gap:.35rem}
.embed .btn{margin:0;padding:.4rem .3rem;font-size:.8rem;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
"""


@dataclass(frozen=True, slots=True)
class Embed:
    """How ``wxLogin.js`` asked for the QR page, as WeChat reads its iframe's query."""

    #: Send the top window to the callback (``self_redirect`` is not ``true``).
    top: bool = True
    #: "black" (dark text, for light pages) or "white" (light text, for dark pages).
    style: str = "black"


_TEXT: Final[Mapping[Lang, Mapping[str, str]]] = {
    "zh": {
        "title": "微信登录",
        "scan": "请使用微信扫描二维码登录",
        "or": "没有手机时 可选择一个测试身份",
        "as": "以 {name} 身份扫码",
        "cancel": "取消登录",
        "scanned": "扫码成功 请在手机上确认登录",
        "expired": "二维码已失效 请刷新页面",
        "go": "已确认 点此继续",
        "phone": "手机扫码后打开的页面",
        "phone_link": "手机链接：",
        "error_title": "微信登录 - 出错了",
        "error": "出错了",
        "errcode": "错误码",
        "gone": "二维码已失效",
        "gone_text": "此登录请求已过期或已被使用。请返回重新开始。",
        "confirm": "确认登录",
        "confirm_text": "是否登录电脑上 AppID 为 {app} 的网站？",
        "confirm_as": "以 {name} 身份确认登录",
        "decline": "取消",
        "confirmed": "已确认",
        "confirmed_text": "请回到电脑上继续。",
        "declined": "已取消",
        "declined_text": "已取消此次登录。",
        "wechat": "微信",
        "who": "谁在使用微信？",
        "who_text": "在真实的微信中这一步是静默的：手机的主人是已知的。"
        "在 {state} 之后加上 {param} 可跳过这一步。",
        "authorize_title": "微信授权",
        "authorize": "授权",
        "authorize_text": "AppID 为 {app} 的应用请求获取你的昵称和头像。",
        "allow_as": "允许，以 {name} 身份",
        "refuse": "拒绝",
        "index": "微信模拟器",
        "index_text": "open.weixin.qq.com 与 api.weixin.qq.com 的替身，供本地演示和测试使用。"
        "各应用下的 openid：",
        "user": "用户",
        "snapshot": "（快照）",
    },
    "en": {
        "title": "Log in with WeChat",
        "scan": "Scan the QR code with WeChat",
        "or": "No phone at hand? Pick a test identity:",
        "as": "Scan as {name}",
        "cancel": "Cancel",
        "scanned": "Scanned: confirm on your phone",
        "expired": "This QR code has expired: reload the page",
        "go": "Confirmed: continue",
        "phone": "The page the phone opens after scanning",
        "phone_link": "Phone link:",
        "error_title": "WeChat login: error",
        "error": "Oops",
        "errcode": "errcode",
        "gone": "QR code expired",
        "gone_text": "This login request has expired or was already used. Go back and start again.",
        "confirm": "Confirm login",
        "confirm_text": "Log in to the website of app {app} on your computer?",
        "confirm_as": "Log in as {name}",
        "decline": "Decline",
        "confirmed": "Confirmed",
        "confirmed_text": "You can go back to your computer.",
        "declined": "Declined",
        "declined_text": "The login was cancelled.",
        "wechat": "WeChat",
        "who": "Who is using WeChat?",
        "who_text": "In real WeChat this step is silent: the phone's user is known. "
        "Add {param} after {state} to skip it.",
        "authorize_title": "WeChat authorization",
        "authorize": "Authorize",
        "authorize_text": "App {app} asks for your nickname and avatar.",
        "allow_as": "Allow as {name}",
        "refuse": "Decline",
        "index": "WeChat simulator",
        "index_text": "A stand-in for open.weixin.qq.com and api.weixin.qq.com, for local demos "
        "and tests. Openids per app:",
        "user": "user",
        "snapshot": " (snapshot)",
    },
}

#: Shown as escapes: they would act (end a line, reverse the text) rather than show.
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def page_lang(environ: WSGIEnvironment, *, embedded: bool = False) -> Lang:
    """A page's language: ``?lang=`` (WeChat's ``cn`` or ``en``, or any spelling the
    gateway's pages take), then ``Accept-Language``, then English, as on the gateway's own
    pages. Inside ``wxLogin.js``'s iframe the embedding page has chosen already: it passes
    ``lang=en`` or nothing, which is Chinese, as on WeChat."""
    if embedded:
        return negotiate_lang({"QUERY_STRING": environ.get("QUERY_STRING", "")}, "zh")
    return negotiate_lang(environ, "en")


def visible(text: str) -> str:
    """``text`` with what would act rather than show (control characters, line separators,
    bidi controls) written as escapes: ``"张三\\x14🚀"`` shows as ``张三\\x14🚀``."""
    return "".join(map(_shown, text))


def _shown(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp") or char in _BIDI:
        return repr(char)[1:-1]
    return "\ufffd" if category == "Cs" else char  # half an emoji has no UTF-8 form


def _e(text: str) -> str:
    return html.escape(visible(text), quote=True)


def _page(lang: Lang, title: str, body: str, embed: Embed | None = None) -> str:
    style, classes = _STYLE, ""
    if embed is not None:
        style += _EMBED_STYLE
        classes = f' class="embed {"white" if embed.style == "white" else "black"}"'
    return (
        f'<!doctype html><html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{style}</style></head>"
        f"<body{classes}><main>{body}</main></body></html>"
    )


def _target(embed: Embed | None) -> str:
    return ' target="_top"' if embed is not None and embed.top else ""


def _user_links(
    ticket_id: str, users: Sequence[SimUser], label: str, embed: Embed | None = None
) -> str:
    return "".join(
        f'<a class="btn"{_target(embed)} '
        f'href="/connect/scan/{quote(ticket_id)}?user={quote(user.key)}" '
        f'title="{_e(label.format(name=user.nickname))}">'
        f"{_e(label.format(name=user.nickname))}</a>"
        for user in users
    )


def _cancel_link(ticket_id: str, label: str, embed: Embed | None = None) -> str:
    return (
        f'<a class="btn secondary"{_target(embed)} '
        f'href="/connect/scan/{quote(ticket_id)}?cancel=1">{_e(label)}</a>'
    )


def error_page(
    message: Said, errcode: int | None = None, *, lang: Lang, embed: Embed | None = None
) -> str:
    """WeChat's "Oops" page: the authorize request was refused and nothing redirects."""
    text = _TEXT[lang]
    code = f'<p class="muted">{_e(text["errcode"])}: <code>{errcode}</code></p>' if errcode else ""
    said = message[0] if lang == "zh" else message[1]
    return _page(
        lang,
        text["error_title"],
        f'<h1>{_e(text["error"])}</h1><p id="error">{_e(said)}</p>{code}',
        embed,
    )


def gone_page(lang: Lang) -> str:
    text = _TEXT[lang]
    return _page(lang, text["gone"], f"<h1>{_e(text['gone'])}</h1><p>{_e(text['gone_text'])}</p>")


def qr_page(
    app: SimApp,
    ticket_id: str,
    confirm_url: str,
    users: Sequence[SimUser],
    lang: Lang,
    embed: Embed | None = None,
) -> str:
    """The desktop QR page. It polls for a confirmation made on a phone.

    Embedded, a confirmation sends the top window to the callback; browsers refuse that
    to a cross-origin frame the user has not clicked in, and then a link is shown instead.
    """
    text = _TEXT[lang]
    qr_svg = segno.make(confirm_url, error="m").svg_inline(scale=4, border=4, omitsize=True)
    poll_url = json.dumps(f"/connect/poll/{quote(ticket_id)}").replace("<", "\\u003c")
    messages = json.dumps(
        {"scanned": text["scanned"], "expired": text["expired"], "go": text["go"]}
    ).replace("<", "\\u003c")
    top = "true" if embed is not None and embed.top else "false"
    script = (
        "(function(){var u=" + poll_url + ",m=" + messages + ",top=" + top + ";"
        "function go(r){if(!top){location.href=r;return}"
        "try{window.top.location.href=r}catch(e){var a=document.createElement('a');"
        "a.href=r;a.target='_top';a.className='btn';a.textContent=m.go;"
        "document.getElementById('status').replaceChildren(a)}}"
        "function p(){fetch(u,{cache:'no-store'}).then(function(r){return r.json()})"
        ".then(function(d){if(d.redirect){go(d.redirect);return}"
        "if(m[d.status]){document.getElementById('status').textContent=m[d.status]}"
        "if(d.status!=='expired'){setTimeout(p,1000)}})"
        ".catch(function(){setTimeout(p,2000)})}setTimeout(p,1000)})();"
    )
    if embed is not None:
        # What fits WeChat's 300x400 frame: the QR code (a link to the phone page, for
        # trying that flow on one computer) and the test identities side by side.
        return _page(
            lang,
            text["title"],
            f"<h1>{_e(text['title'])}</h1>"
            f'<a class="qr" href="{_e(confirm_url)}" target="_blank" rel="noopener" '
            f'aria-label="{_e(text["phone"])}">{qr_svg}</a>'
            f'<p id="status">{_e(text["scan"])}</p>'
            f'<p class="muted">{_e(text["or"])}</p>'
            f'<div class="people">{_user_links(ticket_id, users, text["as"], embed)}'
            f"{_cancel_link(ticket_id, text['cancel'], embed)}</div>"
            f"<script>{script}</script>",
            embed,
        )
    return _page(
        lang,
        text["title"],
        f"<h1>{_e(text['title'])}</h1>"
        f'<p class="muted">AppID <code>{_e(app.app_id)}</code></p>'
        f'<div class="qr">{qr_svg}</div>'
        f'<p id="status" style="text-align:center">{_e(text["scan"])}</p>'
        f'<p class="muted">{_e(text["phone_link"])} '
        f'<a href="{_e(confirm_url)}">{_e(confirm_url)}</a></p>'
        f"<p>{_e(text['or'])}</p>"
        f"{_user_links(ticket_id, users, text['as'])}"
        f"{_cancel_link(ticket_id, text['cancel'])}"
        f"<script>{script}</script>",
    )


def wxlogin_js(qrconnect_url: str) -> str:
    """WeChat's ``wxLogin.js``, pointing at this simulator's QR page.

    Like WeChat's: ``new WxLogin({id, appid, scope, redirect_uri, state, self_redirect,
    style, href, lang, styletype, sizetype, bgcolor, rst})`` replaces the content of element
    ``id`` with a 300x400 iframe of the QR page. The values go into the iframe's URL as
    they are: the caller percent-encodes ``redirect_uri`` itself.
    """
    base = json.dumps(qrconnect_url).replace("<", "\\u003c")
    return (
        "!function (window, document) {\n"
        "  function WxLogin(a) {\n"
        '    var redirect = "default";\n'
        '    if (a.self_redirect === true) { redirect = "true"; }\n'
        '    else if (a.self_redirect === false) { redirect = "false"; }\n'
        f'    var src = {base} + "?appid=" + a.appid + "&scope=" + a.scope'
        ' + "&redirect_uri=" + a.redirect_uri + "&state=" + a.state'
        ' + "&login_type=jssdk&self_redirect=" + redirect'
        ' + "&styletype=" + (a.styletype || "") + "&sizetype=" + (a.sizetype || "")'
        ' + "&bgcolor=" + (a.bgcolor || "") + "&rst=" + (a.rst || "");\n'
        '    if (a.style) { src += "&style=" + a.style; }\n'
        '    if (a.href) { src += "&href=" + a.href; }\n'
        '    if (a.lang === "en") { src += "&lang=en"; }\n'
        '    var frame = document.createElement("iframe");\n'
        "    frame.src = src;\n"
        '    frame.frameBorder = "0";\n'
        '    frame.allowTransparency = "true";\n'
        '    frame.scrolling = "no";\n'
        '    frame.width = "300px";\n'
        '    frame.height = "400px";\n'
        "    var box = document.getElementById(a.id);\n"
        '    box.innerHTML = "";\n'
        "    box.appendChild(frame);\n"
        "  }\n"
        "  window.WxLogin = WxLogin;\n"
        "}(window, document);\n"
    )


def confirm_page(app: SimApp, ticket_id: str, users: Sequence[SimUser], lang: Lang) -> str:
    """What the phone shows after scanning: who are you, and do you allow the login."""
    text = _TEXT[lang]
    forms = "".join(
        f'<form method="post" action="/connect/confirm/{quote(ticket_id)}">'
        f'<input type="hidden" name="user" value="{_e(user.key)}">'
        f'<button class="btn" type="submit">{_e(text["confirm_as"].format(name=user.nickname))}'
        "</button></form>"
        for user in users
    )
    decline = (
        f'<form method="post" action="/connect/confirm/{quote(ticket_id)}">'
        '<input type="hidden" name="cancel" value="1">'
        f'<button class="btn secondary" type="submit">{_e(text["decline"])}</button></form>'
    )
    question = _e(text["confirm_text"]).format(app=f"<code>{_e(app.app_id)}</code>")
    return _page(
        lang,
        text["confirm"],
        f"<h1>{_e(text['confirm'])}</h1><p>{question}</p>{forms}{decline}",
    )


def confirmed_page(accepted: bool, lang: Lang) -> str:
    text = _TEXT[lang]
    heading, said = (
        (text["confirmed"], text["confirmed_text"])
        if accepted
        else (text["declined"], text["declined_text"])
    )
    return _page(lang, heading, f"<h1>{_e(heading)}</h1><p>{_e(said)}</p>")


def oauth2_page(
    app: SimApp, ticket_id: str, users: Sequence[SimUser], scope: str, lang: Lang
) -> str:
    """The in-WeChat page: a chooser for ``snsapi_base``, a consent page for userinfo."""
    text = _TEXT[lang]
    if scope == "snsapi_base":
        note = _e(text["who_text"]).format(
            state="<code>state</code>", param="<code>&amp;sim_user=KEY</code>"
        )
        intro = f'<h1>{_e(text["who"])}</h1><p class="muted">{note}</p>'
        return _page(lang, text["wechat"], intro + _user_links(ticket_id, users, "{name}"))
    asks = _e(text["authorize_text"]).format(app=f"<code>{_e(app.app_id)}</code>")
    intro = f"<h1>{_e(text['authorize'])}</h1><p>{asks}</p>"
    return _page(
        lang,
        text["authorize_title"],
        intro
        + _user_links(ticket_id, users, text["allow_as"])
        + _cancel_link(ticket_id, text["refuse"]),
    )


def index_page(
    apps: Sequence[SimApp],
    users: Sequence[SimUser],
    openids: Mapping[tuple[str, str], str],
    lang: Lang,
) -> str:
    """What the simulator knows: apps, users and each user's openid per app."""
    text = _TEXT[lang]
    head = "".join(f"<th>{_e(app.app_id)}<br>{_e(app.kind)}</th>" for app in apps)
    rows = "".join(
        f"<tr><td>{_e(user.key)}{_e(text['snapshot']) if user.snapshot else ''}<br>"
        f"{_e(user.nickname)}</td>"
        + "".join(f"<td><code>{_e(openids[app.app_id, user.key])}</code></td>" for app in apps)
        + "</tr>"
        for user in users
    )
    return _page(
        lang,
        text["index"],
        f"<h1>{_e(text['index'])}</h1><p>{_e(text['index_text'])}</p>"
        f"<table><tr><th>{_e(text['user'])}</th>{head}</tr>{rows}</table>",
    )
