"""The gateway's own responses: HTML pages for people, JSON for API calls.

Every page the gateway shows (the sign-in page, errors, the signed-out page) is
``templates/page.html`` around one content fragment (``login.html`` or ``message.html``),
branded from a ``Branding`` and written in Chinese or English: ``?lang=`` wins, then
``Accept-Language``, then ``Branding.default_lang`` (``gateway.i18n``). Each page links to
itself in the other language; where its URL is single-use (the WeChat callback's error
pages), the other language is in the page already and the link reveals it. Everything
interpolated is escaped here, and the inline script's data is JSON with ``<``, ``>`` and
``&`` escaped, so no configured or requested value can become markup. Pages and JSON are
encoded by ``gateway.identity.headers.utf8``, so text from WeChat with half an emoji in it (a lone
surrogate) shows as U+FFFD instead of failing the response.

Every page carries a strict Content-Security-Policy. Nothing loads but the page's inline
stylesheet (allowed by its hash), images from the gateway itself and from the logo's
origin, and, on the sign-in page only, WeChat's ``wxLogin.js`` (its origin, plus a fresh
nonce for the inline call) and the QR iframe it creates (the QR page's origin). Pages may
not be framed, and send no ``Referer``: the sign-in URLs carry the login state.

Branding is passed to each function (``branding=``), never held in module state, so two
gateways in one process cannot see each other's. Build it once from the settings with
``Branding.from_settings``. ``error_response`` is the single place a ``GatewayError``
becomes a response; JSON bodies stay English, whatever the page language would be.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from functools import cache
from html import escape
from http import HTTPStatus
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote_plus

from gateway.errors import GatewayError, MethodNotAllowed
from gateway.http.origins import parse_origin
from gateway.identity.headers import utf8
from gateway.web.i18n import HTML_LANG, UI, Lang, action_label, error_text, negotiate_lang

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from gateway.config import Settings

__all__ = [
    "DEFAULT_BRANDING",
    "Branding",
    "LoginChoice",
    "choice_page_response",
    "error_response",
    "is_api_call",
    "json_body",
    "json_response",
    "login_page_response",
    "negotiate_lang",
    "respond",
    "signed_out_response",
    "stylesheet",
]

_NO_STORE = ("Cache-Control", "no-store")
_PAGE_HEADERS: Final = (("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
#: Query parameters that are spent once used: a page whose URL has them offers no
#: language switch, since following it would replay the request (a WeChat callback).
_SINGLE_USE: Final = frozenset({"code", "state"})
#: Hosts a CSP source can carry as they are: nothing that could end the source or the policy.
_HOST = re.compile(r"[a-z0-9.-]+|[0-9a-f:.]+")
_QR_BOX_ID: Final = "wx_qr"


@dataclass(frozen=True, slots=True)
class Branding:
    """What the operator's config puts on every gateway page (``login.*``)."""

    #: The site's name: the sign-in page's heading and every page's banner and title.
    #: Empty: "Sign in" / "登录" on the sign-in page, no banner text elsewhere.
    title: str = ""
    #: An http(s) URL or a ``/path`` on the gateway; shown on every page. A path is fetched
    #: through the gateway, so it must be public (``access.public``).
    logo_url: str = ""
    #: Plain text at the bottom of every page.
    footer: str = ""
    #: "zh" or "en": the language when neither ``?lang=`` nor Accept-Language decides.
    default_lang: str = "en"

    @classmethod
    def from_settings(cls, settings: Settings) -> Branding:
        """The branding a gateway's settings describe. Pages speak the browser's language
        (``Accept-Language``, or ``?lang=``); English when it names neither."""
        login = settings.login
        return cls(title=login.title, logo_url=login.logo_url, footer=login.footer)


DEFAULT_BRANDING: Final = Branding()


# --- who gets JSON ---------------------------------------------------------------------


def is_api_call(environ: WSGIEnvironment) -> bool:
    """The contract's test: JSON asked for and not HTML, an XHR, or not GET/HEAD."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return True
    if environ.get("HTTP_X_REQUESTED_WITH", "").lower() == "xmlhttprequest":
        return True
    accept = environ.get("HTTP_ACCEPT", "").lower()
    if "json" not in accept:
        return False
    wants_json = wants_html = False
    for media_range in accept.split(","):
        media_type, _, params = media_range.partition(";")
        if _refused(params):
            continue
        wants_json = wants_json or "json" in media_type
        wants_html = wants_html or "html" in media_type
    return wants_json and not wants_html


def _refused(params: str) -> bool:
    """``q=0`` (RFC 9110 12.4.2) marks a media type as not acceptable."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value) == 0
            except ValueError:
                return False
    return False


# --- templates and the policy that goes with them ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Templates:
    page: Template
    login: Template
    message: Template
    #: The page's inline stylesheet, and the CSP source that allows exactly it.
    style: str
    style_source: str


@cache
def _templates() -> _Templates:
    folder = resources.files("gateway.web").joinpath("templates")
    page = folder.joinpath("page.html").read_text("utf-8")
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style is not None, "templates/page.html has no <style> element"
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode("utf-8")).digest())
    return _Templates(
        page=Template(page),
        login=Template(folder.joinpath("login.html").read_text("utf-8")),
        message=Template(folder.joinpath("message.html").read_text("utf-8")),
        style=style.group(1),
        style_source=f"'sha256-{digest.decode('ascii')}'",
    )


def stylesheet() -> str:
    """The pages' stylesheet, for another page that should look like them (the demo's
    sample app)."""
    return _templates().style


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None when it has no safe origin."""
    origin = parse_origin(url)
    return origin.serialize() if origin is not None and _HOST.fullmatch(origin.host) else None


def _logo(branding: Branding) -> tuple[str, str] | None:
    """The logo's URL and the CSP source that allows it, or None when there is none."""
    url = branding.logo_url
    if url.startswith("/") and not url.startswith("//"):
        return url, "'self'"
    origin = _origin(url) if url else None
    return (url, origin) if origin else None


def _csp(branding: Branding, *, nonce: str = "", script: str = "", frame: str = "") -> str:
    images = ["'self'", "data:"]
    logo = _logo(branding)
    if logo is not None and logo[1] not in images:
        images.append(logo[1])
    directives = ["default-src 'none'"]
    if nonce:
        directives.append(f"script-src 'nonce-{nonce}' {script}")
    directives.append(f"style-src {_templates().style_source}")
    directives.append(f"img-src {' '.join(images)}")
    if frame:
        directives.append(f"frame-src {frame}")
    directives += ["base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"]
    return "; ".join(directives)


def _switch_href(environ: WSGIEnvironment, lang: Lang) -> str | None:
    """This page in the other language: the same URL with ``lang=`` replaced; None when the
    URL is single-use (a WeChat callback), since following the link would replay it."""
    kept = []
    for part in environ.get("QUERY_STRING", "").split("&"):
        name = unquote_plus(part.partition("=")[0])
        if name in _SINGLE_USE:
            return None
        if part and name != "lang":
            kept.append(quote(part, safe="=%+/:@!$'()*,;~-._?"))
    kept.append(f"lang={_other(lang)}")
    return "?" + "&".join(kept)


def _other(lang: Lang) -> Lang:
    return "en" if lang == "zh" else "zh"


def _page(*, lang: Lang, title: str, body: str, scripts: str = "") -> bytes:
    page = _templates().page.substitute(
        html_lang=HTML_LANG[lang], title=escape(title), body=body, scripts=scripts
    )
    return utf8(page)


def _body(
    *,
    lang: Lang,
    branding: Branding,
    main_class: str,
    content: str,
    banner_title: bool,
    switch_href: str | None,
    hidden: bool = False,
) -> str:
    """The visible page in ``lang``: banner, the card (``main``), footer. A ``hidden`` main
    is a translation's, shown only when the switch targets it (a document may have one
    ``main`` that is not ``hidden``)."""
    text = UI[lang]
    banner = []
    logo = _logo(branding)
    if logo is not None:
        alt = "" if branding.title else text["logo"]
        banner.append(f'<img src="{escape(logo[0])}" alt="{escape(alt)}">')
    if banner_title and branding.title:
        banner.append(f"<p>{escape(branding.title)}</p>")
    footer = []
    if branding.footer:
        footer.append(f"<p>{escape(branding.footer)}</p>")
    if switch_href is not None:
        other = HTML_LANG[_other(lang)]
        footer.append(
            f'<nav aria-label="{escape(text["language"])}">'
            f'<a href="{escape(switch_href)}" lang="{other}" hreflang="{other}">'
            f"{escape(text['switch_label'])}</a></nav>"
        )
    brand = f'<header class="brand">{"".join(banner)}</header>\n' if banner else ""
    foot = f"\n<footer>{''.join(footer)}</footer>" if footer else ""
    opening = f'<main class="{main_class}"{" hidden" if hidden else ""}>'
    return f"{brand}{opening}\n{content}\n</main>{foot}"


@dataclass(frozen=True, slots=True)
class _Message:
    """What a message page says, in one language."""

    status: str
    heading: str
    message: str
    detail: str
    actions: tuple[tuple[str, str], ...]


def _message(
    environ: WSGIEnvironment, branding: Branding, words: Callable[[Lang], _Message]
) -> bytes:
    """A message page in the browser's language, with a switch to the other one.

    The switch is a link to the same URL with ``lang=`` changed, except where the URL is
    single-use (a WeChat callback: following it would replay the callback and fail). There
    the other language is already in the page, hidden, and the switch is a ``#en`` /
    ``#zh`` link that shows it (CSS ``:target``): no request, no script.
    """
    lang = negotiate_lang(environ, branding.default_lang)
    shown = words(lang)
    title = f"{shown.heading} · {branding.title}" if branding.title else shown.heading
    href = _switch_href(environ, lang)
    if href is not None:
        body = _message_body(lang, branding, shown, href)
        return _page(lang=lang, title=title, body=body)
    other = _other(lang)
    body = (
        f'<div class="original" id="{lang}">\n'
        f"{_message_body(lang, branding, shown, f'#{other}')}\n</div>\n"
        f'<div class="translation" id="{other}" lang="{HTML_LANG[other]}">\n'
        f"{_message_body(other, branding, words(other), f'#{lang}', hidden=True)}\n</div>"
    )
    return _page(lang=lang, title=title, body=body)


def _message_body(
    lang: Lang, branding: Branding, words: _Message, switch_href: str, *, hidden: bool = False
) -> str:
    links = "".join(
        f'<a class="button" href="{escape(href)}">{escape(label)}</a>'
        for label, href in words.actions
    )
    content = _templates().message.substitute(
        status=f'<p class="status">{escape(words.status)}</p>' if words.status else "",
        heading=escape(words.heading),
        message=escape(words.message),
        detail=f'<p class="detail">{escape(words.detail)}</p>' if words.detail else "",
        actions=f'<div class="actions">{links}</div>' if links else "",
    )
    return _body(
        lang=lang,
        branding=branding,
        main_class="message",
        content=content,
        banner_title=True,
        switch_href=switch_href,
        hidden=hidden,
    )


# --- sending ----------------------------------------------------------------------------


def respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    *,
    head_only: bool = False,
    cache_control: str = "no-store",
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", cache_control),
        ("X-Content-Type-Options", "nosniff"),
        *extra_headers,
    ]
    start_response(status, headers)
    return [] if head_only else [body]


def json_body(payload: object) -> bytes:
    """The UTF-8 JSON of every JSON answer. WeChat's JSON may hold half an emoji (``\\ud83d``,
    a lone surrogate, which has no UTF-8 form); it becomes U+FFFD rather than a 500."""
    return utf8(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def json_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    payload: object,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    return respond(
        start_response,
        status,
        json_body(payload),
        "application/json; charset=utf-8",
        extra_headers,
        head_only=environ.get("REQUEST_METHOD") == "HEAD",
    )


def _send_page(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    body: bytes,
    csp: str,
    extra_headers: Iterable[tuple[str, str]],
) -> list[bytes]:
    return respond(
        start_response,
        status,
        body,
        "text/html; charset=utf-8",
        [("Content-Security-Policy", csp), *_PAGE_HEADERS, *extra_headers],
        head_only=environ.get("REQUEST_METHOD") == "HEAD",
    )


# --- the pages --------------------------------------------------------------------------


def error_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    error: GatewayError,
    *,
    api: bool | None = None,
    branding: Branding = DEFAULT_BRANDING,
) -> list[bytes]:
    """The single place a GatewayError becomes a response: HTML for people, JSON for APIs
    (``api``: the request context's judgement, see ``gateway.context``; by default the
    request's own headers decide)."""
    status = f"{error.status} {HTTPStatus(error.status).phrase}"
    headers = list(error.extra_headers)
    if isinstance(error, MethodNotAllowed):
        headers.append(("Allow", ", ".join(error.allowed)))
    if api if api is not None else is_api_call(environ):
        payload: dict[str, object] = {"error": error.code or error.title, "message": error.hint}
        if error.detail:
            payload["detail"] = error.detail
        for _label, href in error.actions:
            if "/_gateway/login" in href:
                payload["login_url"] = href
        return json_response(environ, start_response, status, payload, headers)

    def words(lang: Lang) -> _Message:
        heading, hint = error_text(error, lang)
        return _Message(
            status=UI[lang]["error_status"].format(status=error.status),
            heading=heading,
            message=hint,
            detail=error.detail,
            actions=tuple((action_label(label, lang), href) for label, href in error.actions),
        )

    body = _message(environ, branding, words)
    return _send_page(environ, start_response, status, body, _csp(branding), headers)


def signed_out_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    *,
    login_url: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    branding: Branding = DEFAULT_BRANDING,
) -> list[bytes]:
    """200: "You are signed out", with a link to sign in again."""

    def words(lang: Lang) -> _Message:
        text = UI[lang]
        return _Message(
            status="",
            heading=text["signed_out_heading"],
            message=text["signed_out_message"],
            detail="",
            actions=((text["sign_in_again"], login_url),),
        )

    body = _message(environ, branding, words)
    return _send_page(environ, start_response, "200 OK", body, _csp(branding), extra_headers)


def login_page_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    *,
    appid: str,
    redirect_uri: str,
    state: str,
    script_url: str,
    fallback_url: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    branding: Branding = DEFAULT_BRANDING,
) -> list[bytes]:
    """200: the sign-in page, WeChat's QR code embedded by ``wxLogin.js``.

    ``redirect_uri`` is the plain callback URL: it is percent-encoded once here, as
    ``wxLogin.js`` puts it into the iframe's URL as it is. ``fallback_url`` is WeChat's own
    QR page for the same login (already encoded), linked for when the script or the iframe
    cannot load; its origin is the iframe's. Both origins must be http(s).
    """
    script_origin, frame_origin = _origin(script_url), _origin(fallback_url)
    if script_origin is None or frame_origin is None:
        raise ValueError("script_url and fallback_url must be http(s) URLs")
    lang = negotiate_lang(environ, branding.default_lang)
    text = UI[lang]
    nonce = secrets.token_urlsafe(18)
    init = _wxlogin_script(
        LoginChoice(
            "wechat",
            fallback_url,
            script_url=script_url,
            appid=appid,
            redirect_uri=redirect_uri,
            state=state,
        ),
        lang,
    )
    content = _templates().login.substitute(
        heading=escape(branding.title or text["sign_in"]),
        intro=escape(text["sign_in_intro"]),
        qr_label=escape(text["qr_label"]),
        noscript=escape(text["noscript"]),
        fallback=escape(text["fallback"]).format(
            link=f'<a id="wx_fallback" href="{escape(fallback_url)}">'
            f"{escape(text['fallback_link'])}</a>"
        ),
    )
    scripts = (
        f'<script src="{escape(script_url)}" nonce="{nonce}"></script>\n'
        f'<script nonce="{nonce}">\n{init}\n</script>'
    )
    # A sign-in URL is not single-use; one that carries code or state anyway gets no switch
    # rather than a second copy of the page (its QR box and script can be there only once).
    body, title = _sign_in_body(environ, lang, branding, content)
    page = _page(lang=lang, title=title, body=body, scripts=scripts)
    csp = _csp(branding, nonce=nonce, script=script_origin, frame=frame_origin)
    return _send_page(environ, start_response, "200 OK", page, csp, extra_headers)


def _sign_in_body(
    environ: WSGIEnvironment, lang: Lang, branding: Branding, content: str
) -> tuple[str, str]:
    """A sign-in page's body around ``content``, and its title."""
    body = _body(
        lang=lang,
        branding=branding,
        main_class="login",
        content=content,
        banner_title=False,
        switch_href=_switch_href(environ, lang),
    )
    sign_in = UI[lang]["sign_in"]
    return body, f"{sign_in} · {branding.title}" if branding.title else sign_in


@dataclass(frozen=True, slots=True)
class LoginChoice:
    """One way in on the sign-in page that offers several: a provider's own sign-in page
    for this login (``link``), and its QR code shown here: WeChat's through ``wxLogin.js``
    (``script_url``, ``appid``, ``redirect_uri``, ``state``), WeCom's as its QR page framed
    (``frame_url``)."""

    provider: str
    link: str
    frame_url: str = ""
    script_url: str = ""
    appid: str = ""
    redirect_uri: str = ""
    state: str = ""


def choice_page_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    *,
    choices: Sequence[LoginChoice],
    callback_url: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    branding: Branding = DEFAULT_BRANDING,
) -> list[bytes]:
    """200: the sign-in page offering each provider in ``choices`` (WeChat for everyone,
    WeCom for staff), each with its QR code and a plain link to its own sign-in page.

    WeCom's QR page is framed the way WeCom's ``wwLogin.js`` frames it: the frame sends the
    top window to the callback itself, or posts the callback URL, which is followed only
    from the frame's origin and only when it is ``callback_url``.
    """
    lang = negotiate_lang(environ, branding.default_lang)
    text = UI[lang]
    nonce = secrets.token_urlsafe(18)
    sections, scripts, script_sources, frame_sources = [], [], [], []
    for choice in choices:
        if choice.provider == "wecom":
            frame_origin = _origin(choice.frame_url or choice.link)
            if frame_origin is None:
                raise ValueError("frame_url and link must be http(s) URLs")
            frame_sources.append(frame_origin)
            sections.append(
                f'<section class="choice" aria-labelledby="wecom_heading">\n'
                f'<h2 id="wecom_heading">{escape(text["wecom"])}</h2>\n'
                f'<p class="notice">{escape(text["wecom_intro"])}</p>\n'
                f'<div class="qr" role="region" aria-label="{escape(text["wecom_qr_label"])}">'
                f'<iframe id="wecom_frame" src="{escape(choice.frame_url)}" width="300" '
                f'height="400" title="{escape(text["wecom_qr_label"])}"></iframe></div>\n'
                f'<p class="fallback"><a id="wecom_link" class="button" '
                f'href="{escape(choice.link)}">{escape(text["wecom_link"])}</a></p>\n'
                "</section>"
            )
            scripts.append(_wecom_frame_script(frame_origin, callback_url))
        else:
            script_origin, frame_origin = _origin(choice.script_url), _origin(choice.link)
            if script_origin is None or frame_origin is None:
                raise ValueError("script_url and link must be http(s) URLs")
            script_sources.append(script_origin)
            frame_sources.append(frame_origin)
            sections.append(
                f'<section class="choice" aria-labelledby="wechat_heading">\n'
                f'<h2 id="wechat_heading">{escape(text["wechat"])}</h2>\n'
                f'<p class="notice">{escape(text["wechat_intro"])}</p>\n'
                f'<div id="{_QR_BOX_ID}" class="qr" role="region" '
                f'aria-label="{escape(text["qr_label"])}" hidden></div>\n'
                f'<p class="fallback"><a id="wx_fallback" class="button" '
                f'href="{escape(choice.link)}">{escape(text["fallback_link"])}</a></p>\n'
                "</section>"
            )
            scripts.insert(
                0, f'<script src="{escape(choice.script_url)}" nonce="{nonce}"></script>'
            )
            scripts.append(_wxlogin_script(choice, lang))
    content = (
        f"<h1>{escape(branding.title or text['sign_in'])}</h1>\n"
        f'<p class="lead">{escape(text["choose_intro"])}</p>\n'
        f'<noscript><p class="notice">{escape(text["noscript"])}</p></noscript>\n'
        + "\n".join(sections)
    )
    body, title = _sign_in_body(environ, lang, branding, content)
    rendered = "\n".join(
        part if part.startswith("<script src") else f'<script nonce="{nonce}">\n{part}\n</script>'
        for part in scripts
    )
    page = _page(lang=lang, title=title, body=body, scripts=rendered)
    csp = _csp(
        branding,
        nonce=nonce,
        script=" ".join(dict.fromkeys(script_sources)),
        frame=" ".join(dict.fromkeys(frame_sources)),
    )
    return _send_page(environ, start_response, "200 OK", page, csp, extra_headers)


def _wxlogin_script(choice: LoginChoice, lang: Lang) -> str:
    """Start ``wxLogin.js`` in the WeChat box; a note in the box when it did not load."""
    text = UI[lang]
    options = {
        "self_redirect": False,
        "id": _QR_BOX_ID,
        "appid": choice.appid,
        "scope": "snsapi_login",
        "redirect_uri": quote(choice.redirect_uri, safe=""),
        "state": choice.state,
        "style": "black",
        "href": "",
        "lang": "cn" if lang == "zh" else "en",
    }
    words = {"failed": text["qr_failed"], "frame": text["qr_frame_title"]}
    return (
        f"(function () {{\n"
        f"  var box = document.getElementById({_script_json(_QR_BOX_ID)});\n"
        f"  var options = {_script_json(options)};\n"
        f"  var words = {_script_json(words)};\n"
        "  box.hidden = false;\n"
        '  if (typeof window.WxLogin !== "function") {\n'
        '    var note = document.createElement("p");\n'
        '    note.className = "notice";\n'
        "    note.textContent = words.failed;\n"
        "    box.appendChild(note);\n"
        "    return;\n"
        "  }\n"
        "  new window.WxLogin(options);\n"
        '  var frame = box.querySelector("iframe");\n'
        "  if (frame) { frame.title = words.frame; }\n"
        "})();"
    )


def _wecom_frame_script(frame_origin: str, callback_url: str) -> str:
    """``wwLogin.js``'s handshake: ask the frame to post the callback URL, and follow it
    only when it comes from the frame's origin and is this gateway's callback."""
    return (
        "(function () {\n"
        '  var frame = document.getElementById("wecom_frame");\n'
        f"  var origin = {_script_json(frame_origin)};\n"
        f"  var callback = {_script_json(callback_url + '?')};\n"
        '  window.addEventListener("message", function (event) {\n'
        '    if (event.origin !== origin || typeof event.data !== "string") { return; }\n'
        "    if (event.data.indexOf(callback) === 0) { window.location.href = event.data; }\n"
        "  });\n"
        '  frame.addEventListener("load", function () {\n'
        '    frame.contentWindow.postMessage("ask_usePostMessage", origin);\n'
        "  });\n"
        "})();"
    )


def _script_json(value: object) -> str:
    """JSON that is safe inside ``<script>``: no ``</script>``, ``<!--`` or ``&`` tricks."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
