"""HTML for the WeCom simulator's browser pages (``gateway.simulator.wecom``).

The web login and the legacy QR page (a QR code for the phone page, plus plain links to
pick a test member or deny), the phone page, the in-app consent and "who is using WeCom?"
pages, and WeCom's error pages. The error texts WeCom shows are reproduced where the
protocol reference quotes them ("redirect_uri 与配置的授权完成回调域名不一致", "无权限",
"该链接无法访问", "redirect_uri需使用应用可信域名"); the English ones are the simulator's.

Pages are small and self-contained (inline CSS, one tiny polling script on the QR page);
every action is a plain link or form, so the flows work without JS. Every echoed value is
HTML-escaped, and control characters, line separators and bidi controls in names are
shown as escapes (``张三\\x14🚀``) so a test identity shows what it holds.
"""

from __future__ import annotations

import html
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import segno

from gateway.web.i18n import HTML_LANG, Lang

#: A message in both languages: (Chinese, English).
Said = tuple[str, str]

#: The texts WeCom's own pages show, with the simulator's English for ``lang=en``.
DOMAIN_MISMATCH: Final[Said] = (
    "redirect_uri 与配置的授权完成回调域名不一致",
    "redirect_uri does not match the app's authorized callback domain",
)
LINK_INVALID: Final[Said] = ("该链接无法访问", "This link cannot be accessed")
DOMAIN_ERR: Final[Said] = (
    "redirect_uri需使用应用可信域名",
    "redirect_uri must be on one of the app's trusted domains",
)
NO_PRIVILEGE: Final[Said] = ("无权限", "No permission")
BAD_PARAMS: Final[Said] = ("请求参数错误", "Invalid request parameters")
APP_DISABLED: Final[Said] = ("应用已停用", "This app is disabled")
UNKNOWN_USER: Final[Said] = ("没有这个测试成员", "Unknown test member")

_STYLE: Final = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
margin:0;background:#f0f2f5;color:#222}
main{max-width:26rem;margin:2rem auto;background:#fff;padding:1.5rem;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.1)}
h1{font-size:1.25rem;margin:0 0 1rem;text-align:center}
p{line-height:1.5}.muted{color:#777;font-size:.875rem}.muted a{word-break:break-all}
.qr{text-align:center}.qr svg{width:12rem;height:12rem}
.btn{display:block;box-sizing:border-box;width:100%;margin:.5rem 0;padding:.7rem;border:0;
border-radius:4px;background:#0082ef;color:#fff;text-align:center;text-decoration:none;
font-size:1rem;cursor:pointer}
.btn.secondary{background:#eee;color:#333}form{margin:0}
.tag{font-size:.75rem;background:rgba(255,255,255,.25);border-radius:3px;padding:0 .25rem;
margin-left:.25rem}
code{background:#f5f5f5;padding:0 .25rem;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:.8rem}
td,th{border-bottom:1px solid #eee;padding:.25rem;text-align:left;word-break:break-all}
"""

_TEXT: Final[Mapping[Lang, Mapping[str, str]]] = {
    "zh": {
        "title": "企业微信登录",
        "scan": "请使用企业微信扫描二维码登录",
        "corp": "{corp} · {app}",
        "or": "没有手机时 可选择一个测试成员",
        "as": "以 {name} 身份登录",
        "deny": "拒绝登录",
        "scanned": "扫描成功 请在企业微信中确认登录",
        "expired": "二维码已失效 请刷新页面",
        "go": "已确认 点此继续",
        "phone_link": "手机链接：",
        "disabled": "已停用",
        "inactive": "未激活",
        "left": "已退出",
        "outside": "不在可见范围",
        "external": "非企业成员",
        "error_title": "企业微信",
        "errcode": "错误码",
        "no_privilege_text": "你不在此应用的可见范围内，请联系企业管理员。",
        "open_in_wecom": "请在企业微信客户端打开链接",
        "open_in_wecom_text": "此页面只能在企业微信中打开。",
        "gone": "二维码已失效",
        "gone_text": "此登录请求已过期或已被使用。请返回重新开始。",
        "confirm": "确认登录",
        "confirm_text": "是否登录 {corp} 的应用 {app}？",
        "confirm_as": "以 {name} 身份确认登录",
        "confirmed": "已确认",
        "confirmed_text": "请回到电脑上继续。",
        "declined": "已拒绝",
        "declined_text": "已拒绝此次登录。",
        "who": "谁在使用企业微信？",
        "who_text": "在真实的企业微信中这一步是静默的：客户端的主人是已知的。"
        "加上 {param} 参数或 {cookie} Cookie 可跳过这一步。",
        "consent": "授权",
        "consent_text": "应用 {app} 申请获取你的手机号、邮箱、头像等信息。",
        "allow": "允许（{name}）",
        "refuse": "拒绝",
        "index": "企业微信模拟器",
        "index_text": "qyapi.weixin.qq.com、login.work.weixin.qq.com、open.work.weixin.qq.com "
        "与企业微信内授权页的替身，供本地演示和测试使用。",
        "apps": "应用",
        "members": "成员",
        "guests": "非企业成员",
    },
    "en": {
        "title": "Log in with WeCom",
        "scan": "Scan the QR code with WeCom",
        "corp": "{corp} · {app}",
        "or": "No phone at hand? Pick a test member:",
        "as": "Log in as {name}",
        "deny": "Deny",
        "scanned": "Scanned: confirm in WeCom",
        "expired": "This QR code has expired: reload the page",
        "go": "Confirmed: continue",
        "phone_link": "Phone link:",
        "disabled": "disabled",
        "inactive": "not activated",
        "left": "left",
        "outside": "outside visibility",
        "external": "not a member",
        "error_title": "WeCom",
        "errcode": "errcode",
        "no_privilege_text": "You are outside this app's visibility scope: ask your admin.",
        "open_in_wecom": "Open this link in WeCom",
        "open_in_wecom_text": "This page only opens inside the WeCom client.",
        "gone": "QR code expired",
        "gone_text": "This login request has expired or was already used. Go back and start again.",
        "confirm": "Confirm login",
        "confirm_text": "Log in to {app} of {corp}?",
        "confirm_as": "Log in as {name}",
        "confirmed": "Confirmed",
        "confirmed_text": "You can go back to your computer.",
        "declined": "Denied",
        "declined_text": "The login was denied.",
        "who": "Who is using WeCom?",
        "who_text": "In real WeCom this step is silent: the client's user is known. "
        "Add the {param} parameter or the {cookie} cookie to skip it.",
        "consent": "Authorize",
        "consent_text": "App {app} asks for your mobile, email, avatar and more.",
        "allow": "Allow ({name})",
        "refuse": "Decline",
        "index": "WeCom simulator",
        "index_text": "A stand-in for qyapi.weixin.qq.com, login.work.weixin.qq.com, "
        "open.work.weixin.qq.com and the in-app authorization, for local demos and tests.",
        "apps": "Apps",
        "members": "Members",
        "guests": "Non-members",
    },
}

_STATUS_TAG: Final[Mapping[int, str]] = {2: "disabled", 4: "inactive", 5: "left"}

#: Shown as escapes: they would act (end a line, reverse the text) rather than show.
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True, slots=True)
class Person:
    """Someone a login page offers: a member (``key`` is the userid) or a non-member."""

    key: str
    name: str
    status: int = 1
    visible: bool = True
    member: bool = True


def said(message: Said, lang: Lang) -> str:
    return message[0] if lang == "zh" else message[1]


def visible(text: str) -> str:
    """``text`` with what would act rather than show written as escapes."""
    return "".join(map(_shown, text))


def _shown(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp") or char in _BIDI:
        return repr(char)[1:-1]
    return "\ufffd" if category == "Cs" else char


def _e(text: str) -> str:
    return html.escape(visible(text), quote=True)


def _page(lang: Lang, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _tags(person: Person, lang: Lang) -> str:
    text = _TEXT[lang]
    names = []
    if not person.member:
        names.append(text["external"])
    if person.status in _STATUS_TAG:
        names.append(text[_STATUS_TAG[person.status]])
    if not person.visible:
        names.append(text["outside"])
    return "".join(f'<span class="tag">{_e(name)}</span>' for name in names)


def _label(person: Person) -> str:
    return f"{person.name} ({person.key})" if person.member else person.name


def _pick_links(ticket_id: str, people: Sequence[Person], lang: Lang, *, top: bool = False) -> str:
    text, target = _TEXT[lang], ' target="_top"' if top else ""
    links = "".join(
        f'<a class="btn"{target} href="/wwopen/sim/pick/{quote(ticket_id)}'
        f'?user={quote(person.key, safe="")}">'
        f"{_e(text['as'].format(name=_label(person)))}{_tags(person, lang)}</a>"
        for person in people
    )
    deny = (
        f'<a class="btn secondary"{target} href="/wwopen/sim/pick/{quote(ticket_id)}?deny=1">'
        f"{_e(text['deny'])}</a>"
    )
    return links + deny


def login_page(
    *,
    corp: str,
    app: str,
    ticket_id: str,
    scan_url: str,
    people: Sequence[Person],
    lang: Lang,
    top: bool = False,
) -> str:
    """The desktop QR page of the web login and of the legacy ``qrConnect``.

    It polls for a confirmation made on the phone page the QR code points at, and offers
    each test person as a link. ``top``: inside the legacy ``wwLogin.js`` iframe, where a
    choice sends the top window to the callback.
    """
    text = _TEXT[lang]
    qr_svg = segno.make(scan_url, error="m").svg_inline(scale=4, border=4, omitsize=True)
    poll_url = json.dumps(f"/wwopen/sim/poll/{quote(ticket_id)}").replace("<", "\\u003c")
    messages = json.dumps(
        {"scanned": text["scanned"], "expired": text["expired"], "go": text["go"]},
        ensure_ascii=False,
    ).replace("<", "\\u003c")
    script = (
        "(function(){var u=" + poll_url + ",m=" + messages + ",top=" + str(top).lower() + ";"
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
    return _page(
        lang,
        text["title"],
        f"<h1>{_e(text['title'])}</h1>"
        f'<p class="muted" style="text-align:center">'
        f"{_e(text['corp'].format(corp=corp, app=app))}</p>"
        f'<div class="qr">{qr_svg}</div>'
        f'<p id="status" style="text-align:center">{_e(text["scan"])}</p>'
        f'<p class="muted">{_e(text["phone_link"])} '
        f'<a href="{_e(scan_url)}">{_e(scan_url)}</a></p>'
        f"<p>{_e(text['or'])}</p>"
        f"{_pick_links(ticket_id, people, lang, top=top)}"
        f"<script>{script}</script>",
    )


def phone_page(*, corp: str, app: str, ticket_id: str, people: Sequence[Person], lang: Lang) -> str:
    """What the phone shows after scanning: who are you, and do you confirm."""
    text = _TEXT[lang]
    action = f"/wwopen/sim/scan/{quote(ticket_id)}"
    forms = "".join(
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="user" value="{_e(person.key)}">'
        f'<button class="btn" type="submit">'
        f"{_e(text['confirm_as'].format(name=_label(person)))}{_tags(person, lang)}"
        "</button></form>"
        for person in people
    )
    deny = (
        f'<form method="post" action="{action}"><input type="hidden" name="deny" value="1">'
        f'<button class="btn secondary" type="submit">{_e(text["deny"])}</button></form>'
    )
    question = _e(text["confirm_text"].format(corp=corp, app=app))
    return _page(
        lang, text["confirm"], f"<h1>{_e(text['confirm'])}</h1><p>{question}</p>{forms}{deny}"
    )


def done_page(accepted: bool, lang: Lang) -> str:
    text = _TEXT[lang]
    heading, line = (
        (text["confirmed"], text["confirmed_text"])
        if accepted
        else (text["declined"], text["declined_text"])
    )
    return _page(lang, heading, f"<h1>{_e(heading)}</h1><p>{_e(line)}</p>")


def error_page(message: Said, lang: Lang, errcode: int | None = None) -> str:
    """A refusal: the text WeCom shows, HTTP 200, and nothing redirects."""
    text = _TEXT[lang]
    code = f'<p class="muted">{_e(text["errcode"])}: <code>{errcode}</code></p>' if errcode else ""
    return _page(
        lang,
        text["error_title"],
        f'<h1>{_e(text["error_title"])}</h1><p id="error">{_e(said(message, lang))}</p>{code}',
    )


def no_privilege_page(lang: Lang) -> str:
    """A member outside the app's visibility scope tried to log in: no callback."""
    text = _TEXT[lang]
    return _page(
        lang,
        said(NO_PRIVILEGE, lang),
        f'<h1 id="error">{_e(said(NO_PRIVILEGE, lang))}</h1><p>{_e(text["no_privilege_text"])}</p>',
    )


def open_in_wecom_page(lang: Lang) -> str:
    """The in-app authorization opened in an ordinary browser."""
    text = _TEXT[lang]
    return _page(
        lang,
        text["open_in_wecom"],
        f'<h1 id="error">{_e(text["open_in_wecom"])}</h1><p>{_e(text["open_in_wecom_text"])}</p>',
    )


def gone_page(lang: Lang) -> str:
    text = _TEXT[lang]
    return _page(lang, text["gone"], f"<h1>{_e(text['gone'])}</h1><p>{_e(text['gone_text'])}</p>")


def chooser_page(links: Sequence[tuple[Person, str]], lang: Lang) -> str:
    """In-app authorization without a simulated client session: pick who is using WeCom."""
    text = _TEXT[lang]
    note = _e(text["who_text"]).format(
        param="<code>sim_user=USERID</code>", cookie="<code>wecom_sim_user</code>"
    )
    buttons = "".join(
        f'<a class="btn" href="{_e(url)}">{_e(_label(person))}{_tags(person, lang)}</a>'
        for person, url in links
    )
    return _page(
        lang, text["who"], f'<h1>{_e(text["who"])}</h1><p class="muted">{note}</p>{buttons}'
    )


def consent_page(app: str, ticket_id: str, person: Person, lang: Lang) -> str:
    """``snsapi_privateinfo``: the member allows or declines sharing sensitive fields."""
    text = _TEXT[lang]
    base = f"/wwopen/sim/pick/{quote(ticket_id)}"
    return _page(
        lang,
        text["consent"],
        f"<h1>{_e(text['consent'])}</h1><p>{_e(text['consent_text'].format(app=app))}</p>"
        f'<a class="btn" href="{base}?user={quote(person.key, safe="")}">'
        f"{_e(text['allow'].format(name=_label(person)))}</a>"
        f'<a class="btn secondary" href="{base}?deny=1">{_e(text["refuse"])}</a>',
    )


@dataclass(frozen=True, slots=True)
class IndexApp:
    agent_id: int
    name: str
    enabled: bool
    trusted_domains: Sequence[str]


@dataclass(frozen=True, slots=True)
class IndexCorp:
    corp_id: str
    name: str
    apps: Sequence[IndexApp]
    people: Sequence[Person]
    openids: Mapping[str, str]


def index_page(corps: Sequence[IndexCorp], lang: Lang) -> str:
    """What the simulator knows: corps, their apps, members and non-members."""
    text = _TEXT[lang]
    sections = []
    for corp in corps:
        apps = "".join(
            f"<tr><td><code>{app.agent_id}</code></td><td>{_e(app.name)}</td>"
            f"<td>{_e(', '.join(app.trusted_domains))}</td>"
            f"<td>{'' if app.enabled else _e(text['disabled'])}</td></tr>"
            for app in corp.apps
        )
        people = "".join(
            f"<tr><td><code>{_e(p.key)}</code></td><td>{_e(p.name)}{_tags(p, lang)}</td>"
            f"<td><code>{_e(corp.openids.get(p.key, ''))}</code></td></tr>"
            for p in corp.people
        )
        sections.append(
            f"<h2>{_e(corp.name)} <code>{_e(corp.corp_id)}</code></h2>"
            f"<h3>{_e(text['apps'])}</h3><table>{apps}</table>"
            f"<h3>{_e(text['members'])} / {_e(text['guests'])}</h3><table>{people}</table>"
        )
    return _page(
        lang,
        text["index"],
        f"<h1>{_e(text['index'])}</h1><p>{_e(text['index_text'])}</p>{''.join(sections)}",
    )
