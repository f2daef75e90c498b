"""Tests for :mod:`gateway.pages` and :mod:`gateway.i18n`: who is an API call, and every page
the gateway renders itself (errors, the sign-in page, the signed-out page).

The contract: "A request is an API call when its Accept asks for JSON and not HTML, when it
carries X-Requested-With: XMLHttpRequest, or when its method is not GET/HEAD." API calls get
JSON, in English; browsers get a page in Chinese or English (``?lang=``, Accept-Language,
then the configured default), branded, under a strict Content-Security-Policy. Nothing
interpolated is left unescaped and no response is cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html import escape, unescape
from typing import Any
from urllib.parse import quote, unquote

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.config import parse_settings
from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProviderBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.wechat.client import WeChatClient
from gateway.web.i18n import ERRORS_ZH
from gateway.web.pages import (
    Branding,
    error_response,
    is_api_call,
    json_body,
    json_response,
    login_page_response,
    negotiate_lang,
    signed_out_response,
)

HOSTILE = "<script>alert('x')</script> & \"quoted\""
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def environ(method: str = "GET", **headers: str) -> dict[str, Any]:
    """A WSGI environ; ``headers`` are given as CGI names without the HTTP_ prefix."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    env.update({f"HTTP_{name}": value for name, value in headers.items()})
    return env


class Page:
    """A WSGI call's status, headers and body: ``call(env, start_response, **kwargs)``."""

    def __init__(self, call: Any, env: dict[str, Any], **kwargs: Any) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.body = b"".join(call(env, self.start_response, **kwargs))

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        self.status = status
        self.headers = headers
        return lambda data: None

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Captured(Page):
    """``error_response`` for one error."""

    def __init__(self, env: dict[str, Any], error: GatewayError) -> None:
        super().__init__(error_response, env, error=error)


# --- is_api_call --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # A browser navigation, or anything that does not ask for JSON.
        (environ(ACCEPT=BROWSER_ACCEPT), False),
        (environ(), False),
        (environ("HEAD"), False),
        (environ(ACCEPT="*/*"), False),
        (environ(ACCEPT="text/html"), False),
        (environ(ACCEPT="text/plain"), False),
        (environ(ACCEPT="image/png,image/*;q=0.8"), False),
        (environ("HEAD", ACCEPT="text/html"), False),
        # JSON, and HTML too: a browser-ish client still gets the page.
        (environ(ACCEPT="application/json, text/html"), False),
        (environ(ACCEPT="text/html, application/json;q=0.9"), False),
        (environ(ACCEPT="application/json, text/html;q=0.1"), False),
        # JSON and not HTML.
        (environ(ACCEPT="application/json"), True),
        (environ(ACCEPT="Application/JSON"), True),
        (environ(ACCEPT="application/json, text/plain, */*"), True),
        (environ(ACCEPT="application/vnd.api+json"), True),
        (environ(ACCEPT="application/problem+json"), True),
        (environ("HEAD", ACCEPT="application/json"), True),
        # XMLHttpRequest, whatever it accepts.
        (environ(X_REQUESTED_WITH="XMLHttpRequest"), True),
        (environ(X_REQUESTED_WITH="xmlhttprequest"), True),
        (environ(X_REQUESTED_WITH="XMLHttpRequest", ACCEPT=BROWSER_ACCEPT), True),
        (environ("HEAD", X_REQUESTED_WITH="XMLHttpRequest"), True),
        (environ(X_REQUESTED_WITH="com.example.app"), False),
        # Every method other than GET and HEAD, even from a browser form.
        (environ("POST", ACCEPT=BROWSER_ACCEPT), True),
        (environ("PUT"), True),
        (environ("PATCH", ACCEPT="text/html"), True),
        (environ("DELETE"), True),
        (environ("OPTIONS"), True),
        (environ("PROPFIND"), True),
    ],
)
def test_is_api_call(env: dict[str, Any], expected: bool) -> None:
    assert is_api_call(env) is expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [("text/html;q=0, application/json", True), ("application/json;q=0", False)],
)
def test_is_api_call_honours_q_zero(accept: str, expected: bool) -> None:
    assert is_api_call(environ(ACCEPT=accept)) is expected


# --- error_response -----------------------------------------------------------------------


def test_browser_gets_an_html_page() -> None:
    response = Captured(environ(ACCEPT=BROWSER_ACCEPT), NotFound("no such gateway endpoint"))

    assert response.status == "404 Not Found"
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert response.header("Content-Length") == str(len(response.body))
    assert response.text.startswith("<!doctype html>")
    assert "Not found" in response.text
    assert NotFound.hint in response.text
    assert "no such gateway endpoint" in response.text


def test_api_call_gets_json() -> None:
    response = Captured(environ(ACCEPT="application/json"), UpstreamTimeout("took 3s"))

    assert response.status == "504 Gateway Timeout"
    assert response.header("Content-Type") == "application/json; charset=utf-8"
    assert response.header("Content-Length") == str(len(response.body))
    payload = json.loads(response.body)
    assert payload == {
        "error": UpstreamTimeout.title,
        "message": UpstreamTimeout.hint,
        "detail": "took 3s",
    }


def test_json_without_detail_has_no_detail_key() -> None:
    payload = json.loads(Captured(environ("POST"), BadRequest()).body)
    assert payload == {"error": BadRequest.title, "message": BadRequest.hint}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (GatewayError(), "500 Internal Server Error"),
        (BadRequest(), "400 Bad Request"),
        (NotFound(), "404 Not Found"),
        (MethodNotAllowed(("GET", "HEAD")), "405 Method Not Allowed"),
        (PayloadTooLarge(1024), "413 Request Entity Too Large"),
        (UpstreamUnavailable(), "502 Bad Gateway"),
        (UpstreamTimeout(), "504 Gateway Timeout"),
    ],
)
@pytest.mark.parametrize("api", [False, True])
def test_status_line_for_every_error(error: GatewayError, status: str, api: bool) -> None:
    env = environ(ACCEPT="application/json") if api else environ(ACCEPT=BROWSER_ACCEPT)
    response = Captured(env, error)
    assert response.status == status
    assert api or f"Error {error.status}" in response.text


def test_html_page_escapes_everything_interpolated() -> None:
    response = Captured(
        environ(ACCEPT=BROWSER_ACCEPT),
        BadRequest(HOSTILE, actions=((HOSTILE, '/retry?a=1&b="><script>x()</script>'),)),
    )
    text = response.text
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in text
    assert 'href="/retry?a=1&amp;b=&quot;&gt;&lt;script&gt;x()&lt;/script&gt;"' in text


def test_html_page_escapes_the_error_text_itself() -> None:
    class Hostile(BadRequest):
        title = "<b>title</b>"
        hint = "<i>hint</i>"

    text = Captured(environ(), Hostile()).text
    assert "<b>" not in text
    assert "<i>" not in text
    assert "&lt;b&gt;title&lt;/b&gt;" in text
    assert "&lt;i&gt;hint&lt;/i&gt;" in text


def test_json_carries_the_detail_verbatim() -> None:
    payload = json.loads(Captured(environ("POST"), BadRequest(HOSTILE)).body)
    assert payload["detail"] == HOSTILE


def test_json_is_utf8() -> None:
    response = Captured(environ("POST"), BadRequest("无法识别的请求"))
    assert json.loads(response.body.decode("utf-8"))["detail"] == "无法识别的请求"


# JSON lets WeChat send half an emoji ("\ud83d"): a lone surrogate, which has no UTF-8 form.
# A nickname or openid with one must not make any answer of the gateway fail.
HALF_EMOJI = "half \ud83d emoji \udc00"
MENDED = "half \ufffd emoji \ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def test_json_body_replaces_lone_surrogates_with_the_replacement_character() -> None:
    body = json_body({"nickname": HALF_EMOJI, "more": ["\ud800", {"\udfffkey": "🚀"}]})
    assert json.loads(body.decode("utf-8")) == {
        "nickname": MENDED,
        "more": ["\ufffd", {"\ufffdkey": "🚀"}],
    }


# Joined by hand: st.text() leaves surrogates out of almost every string.
_BROKEN_TEXT = st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))).map(
    "".join
)


@given(_BROKEN_TEXT)
def test_json_body_never_fails_on_any_text(text: str) -> None:
    mended = _SURROGATE.sub("\ufffd", text)
    body = json_body({"key": text, text: [text]})
    assert json.loads(body.decode("utf-8")) == {"key": mended, mended: [mended]}


def test_json_response_with_a_lone_surrogate() -> None:
    response = Page(json_response, environ(), status="200 OK", payload={"nickname": HALF_EMOJI})
    assert response.status == "200 OK"
    assert response.header("Content-Length") == str(len(response.body))
    assert json.loads(response.text) == {"nickname": MENDED}


@pytest.mark.parametrize("lang", ["zh", "en", "json"])
def test_an_error_naming_a_broken_identity_is_still_answered(lang: str) -> None:
    """The 403 names the openid; whatever WeChat put in it, the page (or JSON) is sent."""
    env = {"zh": zh(), "en": en(), "json": environ(ACCEPT="application/json")}[lang]
    response = Captured(env, errors.NotAllowed(f"openid: {HALF_EMOJI}"))
    assert response.status == "403 Forbidden"
    if lang == "json":
        assert json.loads(response.text)["detail"] == f"openid: {MENDED}"
    else:
        assert f'<p class="detail">openid: {MENDED}</p>' in response.text


def test_rendered_pages_replace_lone_surrogates() -> None:
    branded = Branding(title=HALF_EMOJI, footer=HALF_EMOJI)
    page = Page(error_response, en(), error=errors.NotFound(HALF_EMOJI), branding=branded)
    assert page.text.count(MENDED) >= 3
    signed_out = Page(signed_out_response, en(), login_url="/_gateway/login", branding=branded)
    assert MENDED in signed_out.text


def test_actions_become_links() -> None:
    error = UpstreamUnavailable(actions=(("Try again", "/_gateway/login?rd=%2F"),))
    text = Captured(environ(), error).text
    assert '<a class="button" href="/_gateway/login?rd=%2F">Try again</a>' in text


def test_json_carries_the_login_link_as_login_url() -> None:
    error = UpstreamUnavailable(
        actions=(("Home", "/"), ("Sign in again", "/_gateway/login?rd=%2Fapp"))
    )
    payload = json.loads(Captured(environ("POST"), error).body)
    assert payload["login_url"] == "/_gateway/login?rd=%2Fapp"


def test_json_without_a_login_link_has_no_login_url() -> None:
    payload = json.loads(Captured(environ("POST"), BadRequest(actions=(("Home", "/"),))).body)
    assert "login_url" not in payload


@pytest.mark.parametrize(
    "env", [environ("HEAD", ACCEPT=BROWSER_ACCEPT), environ("HEAD", ACCEPT="application/json")]
)
def test_head_gets_no_body_but_the_get_length(env: dict[str, Any]) -> None:
    error = NotFound(HOSTILE)
    head = Captured(env, error)
    get = Captured({**env, "REQUEST_METHOD": "GET"}, error)

    assert head.body == b""
    assert get.body != b""
    assert head.status == get.status
    assert head.header("Content-Type") == get.header("Content-Type")
    assert head.header("Content-Length") == str(len(get.body))


@pytest.mark.parametrize(
    "env",
    [
        environ(ACCEPT=BROWSER_ACCEPT),
        environ(ACCEPT="application/json"),
        environ("HEAD"),
        environ("POST"),
    ],
)
def test_error_responses_are_never_cached(env: dict[str, Any]) -> None:
    response = Captured(env, UpstreamUnavailable())
    assert response.header("Cache-Control") == "no-store"
    assert response.header("X-Content-Type-Options") == "nosniff"


def test_method_not_allowed_lists_the_allowed_methods() -> None:
    for env in (environ("POST"), environ("DELETE", ACCEPT=BROWSER_ACCEPT)):
        response = Captured(env, MethodNotAllowed(("GET", "HEAD")))
        assert response.status == "405 Method Not Allowed"
        assert response.header("Allow") == "GET, HEAD"


def test_extra_headers_are_sent() -> None:
    response = Captured(environ(), BadRequest(extra_headers=(("Retry-After", "5"),)))
    assert response.header("Retry-After") == "5"
    assert response.header("Cache-Control") == "no-store"


# --- language -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept_language", "default", "expected"),
    [
        # Nothing to go on: the default.
        ("", "", "en", "en"),
        ("", "", "zh", "zh"),
        ("", "", "cn", "zh"),
        ("", "", "fr", "en"),
        # Accept-Language, with q-values.
        ("", "zh-CN,zh;q=0.9,en;q=0.8", "en", "zh"),
        ("", "en-US,en;q=0.9,zh-CN;q=0.8", "zh", "en"),
        ("", "zh-TW", "en", "zh"),
        ("", "zh-Hans-CN", "en", "zh"),
        ("", "ZH_cn", "en", "zh"),
        ("", "en-GB", "zh", "en"),
        ("", "fr-FR,fr;q=0.9,en;q=0.5,zh;q=0.4", "zh", "en"),
        ("", "fr-FR,de;q=0.9", "zh", "zh"),
        ("", "en;q=0.2, zh;q=0.8", "en", "zh"),
        ("", "zh;q=0, en;q=0.1", "zh", "en"),
        ("", "zh;q=0", "en", "en"),
        ("", "zh;q=1, en", "zh", "zh"),  # a tie: the first listed
        ("", "en, zh", "zh", "en"),
        ("", "*", "zh", "zh"),
        ("", "zh;q=abc, en;q=0.5", "zh", "en"),
        ("", "zh;q=2, en;q=0.5", "zh", "en"),
        ("", ",,;q=1, ; ,", "zh", "zh"),
        # ?lang= wins over everything, in any spelling WeChat or a person would use.
        ("lang=en", "zh-CN,zh;q=0.9", "zh", "en"),
        ("lang=zh", "en-US", "en", "zh"),
        ("lang=zh_CN", "en-US", "en", "zh"),
        ("lang=zh-CN", "en-US", "en", "zh"),
        ("lang=cn", "en-US", "en", "zh"),
        ("lang=EN", "zh", "zh", "en"),
        ("lang=en_US", "zh", "zh", "en"),
        ("rd=%2Fx&lang=zh-cn", "en", "en", "zh"),
        ("lang=zh%5FCN", "en", "en", "zh"),
        # An unknown ?lang= is ignored.
        ("lang=fr", "zh-CN", "en", "zh"),
        ("lang=", "en", "zh", "en"),
        ("language=zh", "en", "en", "en"),
    ],
)
def test_negotiate_lang(query: str, accept_language: str, default: str, expected: str) -> None:
    env = environ()
    env["QUERY_STRING"] = query
    if accept_language:
        env["HTTP_ACCEPT_LANGUAGE"] = accept_language
    assert negotiate_lang(env, default) == expected


# --- every error, in both languages ----------------------------------------------------------

ERROR_CLASSES = sorted(
    (
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, GatewayError)
    ),
    key=lambda cls: cls.__name__,
)
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def instance(cls: type[GatewayError]) -> GatewayError:
    if cls is MethodNotAllowed:
        return MethodNotAllowed(("GET", "HEAD"))
    if cls is PayloadTooLarge:
        return PayloadTooLarge(1024)
    if issubclass(cls, ProviderBusy):
        return cls(retry_after=60)
    return cls(actions=(("Try again", "/_gateway/login"),))


def zh() -> dict[str, Any]:
    return environ(ACCEPT=BROWSER_ACCEPT, ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.8")


def en() -> dict[str, Any]:
    return environ(ACCEPT=BROWSER_ACCEPT, ACCEPT_LANGUAGE="en-US,en;q=0.9")


def visible_text(page: str) -> str:
    """What a reader sees (and the title), minus the detail and the language switch."""
    title = re.search(r"<title>(.*?)</title>", page, re.DOTALL)
    body = page.split("<body>", 1)[1]
    body = re.sub(r'<p class="detail">.*?</p>', "", body, flags=re.DOTALL)
    body = re.sub(r"<nav .*?</nav>", "", body, flags=re.DOTALL)
    body = re.sub(r"<script.*?</script>", "", body, flags=re.DOTALL)
    text = re.sub(r"<[^>]+>", " ", body)
    return unescape(f"{title.group(1) if title else ''} {text}")


def heading(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.DOTALL)
    assert found is not None
    return unescape(found.group(1))


def test_the_catalog_knows_every_error_class() -> None:
    missing = [cls.__name__ for cls in ERROR_CLASSES if cls.__name__ not in ERRORS_ZH]
    assert missing == []
    assert len(ERROR_CLASSES) >= 15


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_page_in_chinese(cls: type[GatewayError]) -> None:
    error = instance(cls)
    response = Captured(zh(), error)
    page = response.text
    assert '<html lang="zh-CN">' in page
    assert heading(page) == ERRORS_ZH[cls.__name__].title
    assert ERRORS_ZH[cls.__name__].title != cls.title
    shown = visible_text(page)
    assert LATIN_WORD.findall(shown) == [], shown
    assert f"错误代码 {cls.status}" in shown
    # The language switch leads to the same page in English.
    assert '<a href="?lang=en" lang="en" hreflang="en">English</a>' in page


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_page_in_english(cls: type[GatewayError]) -> None:
    response = Captured(en(), instance(cls))
    page = response.text
    assert '<html lang="en">' in page
    assert heading(page) == cls.title
    assert (
        escape(cls.hint if not issubclass(cls, ProviderBusy) else "Try again in about 60") in page
    )
    assert re.search(r"[\u4e00-\u9fff]", visible_text(page)) is None
    assert '<a href="?lang=zh" lang="zh-CN" hreflang="zh-CN">中文</a>' in page


def test_an_unknown_error_class_speaks_like_its_nearest_base() -> None:
    class QuotaGone(ProviderBusy):
        title = "Quota gone"
        hint = "Come back tomorrow."

    class Odd(errors.LoginCancelled):
        pass

    busy = Captured(zh(), QuotaGone(retry_after=30)).text
    assert heading(busy) == "微信繁忙"
    assert "请约 30 秒后重试" in busy
    assert heading(Captured(zh(), Odd()).text) == "已取消登录"
    # English comes from the class itself, as in the JSON.
    assert heading(Captured(en(), QuotaGone(retry_after=30)).text) == "Quota gone"


def test_busy_says_when_to_retry() -> None:
    error = ProviderBusy("errcode -1", retry_after=5)
    assert "微信当前繁忙，请约 5 秒后重试。" in Captured(zh(), error).text
    english = Captured(en(), error)
    assert "WeChat is busy right now. Try again in about 5 seconds." in english.text
    assert english.header("Retry-After") == "5"


def test_known_action_labels_are_translated_and_unknown_ones_pass() -> None:
    error = errors.NotAllowed(
        actions=(
            ("Sign in with another account", "/_gateway/login"),
            ("Sign out", "/_gateway/logout"),
            ("Sign in again", "/_gateway/login?rd=%2Fa"),
            ("Try again", "/_gateway/login?rd=%2Fb"),
            ("Sign in", "/_gateway/login?rd=%2Fc"),
            ("Wiki", "/wiki"),
        )
    )
    page = Captured(zh(), error).text
    labels = re.findall(r'<a class="button" href="[^"]*">([^<]*)</a>', page)
    assert labels == ["使用其他账号登录", "退出登录", "重新登录", "重试", "登录", "Wiki"]
    english = re.findall(r'<a class="button" href="[^"]*">([^<]*)</a>', Captured(en(), error).text)
    assert english == [label for label, _ in error.actions]


def test_detail_is_shown_as_given_in_both_languages() -> None:
    error = errors.ProviderFailed("errcode 40029: invalid code <x>")
    for env in (zh(), en()):
        assert (
            '<p class="detail">errcode 40029: invalid code &lt;x&gt;</p>'
            in Captured(env, error).text
        )


def test_json_stays_english_whatever_the_language() -> None:
    for query in ("", "lang=zh"):
        env = environ(ACCEPT="application/json", ACCEPT_LANGUAGE="zh-CN")
        env["QUERY_STRING"] = query
        payload = json.loads(
            Captured(
                env,
                ProviderBusy("busy", retry_after=5, actions=(("Try again", "/_gateway/login"),)),
            ).body
        )
        assert payload == {
            "error": ProviderBusy.title,
            "message": ProviderBusy.hint,
            "detail": "busy",
            "login_url": "/_gateway/login",
        }


# --- the language switch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "href"),
    [
        ("", "?lang=en"),
        ("rd=%2Fwiki%3Fa%3D1", "?rd=%2Fwiki%3Fa%3D1&amp;lang=en"),
        ("lang=zh&rd=%2F", "?rd=%2F&amp;lang=en"),
        ("a=1&lang=zh&lang=cn&b=%22", "?a=1&amp;b=%22&amp;lang=en"),
        ('x="><script>', "?x=%22%3E%3Cscript%3E&amp;lang=en"),
    ],
)
def test_language_switch_keeps_the_rest_of_the_query(query: str, href: str) -> None:
    env = zh()
    env["QUERY_STRING"] = query
    page = Captured(env, NotFound()).text
    assert f'<a href="{href}" lang="en" hreflang="en">English</a>' in page


@pytest.mark.parametrize("query", ["code=abc&state=xyz", "state=xyz", "code=abc&lang=zh"])
def test_a_callback_page_switches_language_within_the_page(query: str) -> None:
    """Following a link to the callback URL would replay it (and fail): the other language
    is in the page already, and the switch is a #fragment that shows it, no request made."""
    env = zh()
    env["QUERY_STRING"] = query
    error = errors.LoginCancelled(actions=(("Try again", "/_gateway/login?rd=%2F"),))
    page = Captured(env, error).text
    assert '<html lang="zh-CN">' in page
    switches = re.findall(r'<nav aria-label="[^"]*"><a href="([^"]*)"[^>]*>([^<]*)</a>', page)
    assert switches == [("#en", "English"), ("#zh", "中文")]
    original, translation = page.split('<div class="translation" id="en" lang="en">')
    # The page as negotiated comes first; the English one follows, its main hidden until
    # its #en is the target.
    assert '<div class="original" id="zh">' in original
    assert '<main class="message">' in original and "hidden" not in original.split("<body>")[1]
    assert heading(original) == "已取消登录" and ">重试</a>" in original
    assert '<main class="message" hidden>' in translation
    assert "<h1>Sign-in cancelled</h1>" in translation and ">Try again</a>" in translation
    assert page.count("<main") == 2
    css = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert css is not None
    for rule in (
        ".translation:not(:target), body:has(.translation:target) .original { display: none; }",
        ".translation:target main[hidden] { display: block; }",
    ):
        assert rule in css.group(1)


def test_a_page_that_is_not_a_callback_has_no_hidden_translation() -> None:
    page = Captured(zh(), errors.LoginCancelled()).text
    assert "translation" not in page.split("</style>", 1)[1]
    assert page.count("<main") == 1


# --- security headers ------------------------------------------------------------------------


def csp_of(response: Page) -> dict[str, str]:
    policy = response.header("Content-Security-Policy")
    assert policy is not None
    directives = [part.strip().split(" ", 1) for part in policy.split(";")]
    return {name: value for name, value in directives}


def style_hash(page: str) -> str:
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    return f"'sha256-{digest}'"


def test_every_page_gets_the_strict_policy() -> None:
    response = Captured(en(), NotFound())
    assert response.header("Content-Security-Policy") == (
        f"default-src 'none'; style-src {style_hash(response.text)}; img-src 'self' data:;"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Referrer-Policy") == "no-referrer"
    assert response.header("Cache-Control") == "no-store"
    assert "style=" not in response.text  # no inline style attributes for the policy to block
    assert "<script" not in response.text


def test_json_errors_carry_no_page_policy() -> None:
    response = Captured(environ("POST"), NotFound())
    assert response.header("Content-Security-Policy") is None


# --- the sign-in page ------------------------------------------------------------------------

APPID = "wx5e1a2b3c4d5e6f70"
CALLBACK = "https://intranet.example.com:8443/_gateway/callback"
STATE = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
SCRIPT = "https://res.wx.qq.com/connect/zh_CN/htmledition/js/wxLogin.js"
WECHAT = WeChatClient(
    APPID,
    "secret",
    api_base="https://api.weixin.qq.com",
    open_base="https://open.weixin.qq.com",
    timeout=5,
)
FALLBACK = WECHAT.qrconnect_url(CALLBACK, STATE)
ENCODED_ONCE = "https%3A%2F%2Fintranet.example.com%3A8443%2F_gateway%2Fcallback"


def sign_in(env: dict[str, Any] | None = None, **kwargs: Any) -> Page:
    options: dict[str, Any] = {
        "appid": APPID,
        "redirect_uri": CALLBACK,
        "state": STATE,
        "script_url": SCRIPT,
        "fallback_url": FALLBACK,
        **kwargs,
    }
    return Page(login_page_response, env if env is not None else en(), **options)


def wx_options(page: str) -> dict[str, Any]:
    found = re.search(r"var options = (\{.*?\});", page)
    assert found is not None
    parsed: dict[str, Any] = json.loads(found.group(1))
    return parsed


def test_sign_in_page_calls_wxlogin_with_the_official_parameters() -> None:
    page = sign_in()
    assert page.status == "200 OK"
    assert wx_options(page.text) == {
        "self_redirect": False,
        "id": "wx_qr",
        "appid": APPID,
        "scope": "snsapi_login",
        "redirect_uri": ENCODED_ONCE,
        "state": STATE,
        "style": "black",
        "href": "",
        "lang": "en",
    }
    assert '<div id="wx_qr" class="qr"' in page.text
    assert wx_options(sign_in(zh()).text)["lang"] == "cn"


def test_redirect_uri_is_encoded_exactly_once() -> None:
    uri = "https://intranet.example.com/_gateway/callback?x=a b&y=%2F"
    text = sign_in(redirect_uri=uri).text
    assert wx_options(text)["redirect_uri"] == quote(uri, safe="")
    assert unquote(wx_options(text)["redirect_uri"]) == uri
    assert "%25" not in wx_options(sign_in().text)["redirect_uri"]
    # The fallback link is WeChat's own URL, HTML-escaped and not encoded again.
    fallback = re.search(r'<a id="wx_fallback" href="([^"]*)">', sign_in().text)
    assert fallback is not None
    assert unescape(fallback.group(1)) == FALLBACK
    assert f"redirect_uri={ENCODED_ONCE}&amp;" in fallback.group(1)


def test_sign_in_page_policy_lets_wechat_in_and_nothing_else() -> None:
    page = sign_in()
    nonces = set(re.findall(r'<script[^>]* nonce="([^"]+)"', page.text))
    assert len(nonces) == 1
    nonce = nonces.pop()
    assert len(nonce) >= 22
    assert page.text.count(f'nonce="{nonce}"') == 2
    assert f'<script src="{SCRIPT}" nonce="{nonce}"></script>' in page.text
    assert page.header("Content-Security-Policy") == (
        f"default-src 'none'; script-src 'nonce-{nonce}' https://res.wx.qq.com;"
        f" style-src {style_hash(page.text)}; img-src 'self' data:;"
        " frame-src https://open.weixin.qq.com; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    )
    assert page.header("X-Frame-Options") == "DENY"
    assert page.header("Referrer-Policy") == "no-referrer"
    assert page.header("Cache-Control") == "no-store"
    assert sign_in().header("Content-Security-Policy") != page.header("Content-Security-Policy")


def test_sign_in_page_policy_follows_the_configured_origins() -> None:
    page = sign_in(
        script_url="http://127.0.0.1:9000/connect/zh_CN/htmledition/js/wxLogin.js",
        fallback_url="http://127.0.0.1:9000/connect/qrconnect?appid=x",
        branding=Branding(logo_url="https://CDN.example.com:8443/logo.png?v=2"),
    )
    csp = csp_of(page)
    assert csp["script-src"].endswith(" http://127.0.0.1:9000")
    assert csp["frame-src"] == "http://127.0.0.1:9000"
    assert csp["img-src"] == "'self' data: https://cdn.example.com:8443"


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "/relative.js", "ftp://x/y.js"])
def test_sign_in_page_refuses_urls_without_an_origin(bad: str) -> None:
    with pytest.raises(ValueError, match="http"):
        sign_in(script_url=bad)
    with pytest.raises(ValueError, match="http"):
        sign_in(fallback_url=bad)


def test_sign_in_page_script_data_cannot_break_out() -> None:
    text = sign_in(appid="</script><script>alert(1)</script>", state="a&b<!--").text
    inline = re.search(r'<script nonce="[^"]+">(.*?)</script>', text, re.DOTALL)
    assert inline is not None
    assert "<" not in inline.group(1) and "&" not in inline.group(1)
    assert "\\u003c/script\\u003e" in inline.group(1)
    assert wx_options(text)["appid"] == "</script><script>alert(1)</script>"
    assert wx_options(text)["state"] == "a&b<!--"


def test_sign_in_page_has_a_fallback_for_no_script_and_no_wechat() -> None:
    text = sign_in().text
    assert "<noscript>" in text
    assert ">Open WeChat&#x27;s QR page</a>" in text
    assert 'typeof window.WxLogin !== "function"' in text
    assert ">打开微信二维码页面</a>" in sign_in(zh()).text


def test_sign_in_page_sends_the_extra_headers() -> None:
    page = sign_in(extra_headers=[("Set-Cookie", "wechat_gateway_login=abc; Path=/_gateway/")])
    assert page.header("Set-Cookie") == "wechat_gateway_login=abc; Path=/_gateway/"


@pytest.mark.parametrize("call", ["sign_in", "signed_out"])
def test_head_gets_the_headers_and_no_body(call: str) -> None:
    def run(method: str) -> Page:
        env = {**en(), "REQUEST_METHOD": method}
        if call == "sign_in":
            return sign_in(env)
        return Page(signed_out_response, env, login_url="/_gateway/login")

    head, get = run("HEAD"), run("GET")
    assert head.body == b"" and get.body != b""
    assert head.status == get.status == "200 OK"
    assert head.header("Content-Length") == str(len(get.body))
    assert head.header("Content-Security-Policy") is not None


# --- branding ------------------------------------------------------------------------------

HOSTILE_BRANDING = Branding(
    title="<script>alert('t')</script> & Co",
    logo_url='https://cdn.example.com/logo.png?a=1&b="><script>',
    footer="<b>footer</b> © 2026",
)


def test_branding_is_shown_and_escaped_on_every_page() -> None:
    pages = [
        sign_in(branding=HOSTILE_BRANDING).text,
        Page(
            signed_out_response, en(), login_url="/_gateway/login", branding=HOSTILE_BRANDING
        ).text,
        Page(error_response, en(), error=NotFound(), branding=HOSTILE_BRANDING).text,
    ]
    for text in pages:
        assert "<script>alert" not in text and "<b>" not in text
        assert "&lt;script&gt;alert(&#x27;t&#x27;)&lt;/script&gt; &amp; Co" in text
        assert (
            '<img src="https://cdn.example.com/logo.png?a=1&amp;b=&quot;&gt;&lt;script&gt;" alt="">'
            in text
        )
        assert "<footer><p>&lt;b&gt;footer&lt;/b&gt; © 2026</p>" in text
    # The sign-in page's heading is the title; the others carry it in the banner and title.
    assert heading(pages[0]) == HOSTILE_BRANDING.title
    assert "<title>Sign in · &lt;script&gt;" in pages[0]
    assert heading(pages[2]) == "Not found"
    assert "<title>Not found · &lt;script&gt;" in pages[2]


def test_unbranded_pages_use_the_default_words() -> None:
    text = sign_in().text
    assert heading(text) == "Sign in"
    assert '<header class="brand">' not in text
    assert "<footer><nav" in text
    assert heading(sign_in(zh()).text) == "登录"


def test_a_logo_without_a_title_gets_alt_text() -> None:
    text = sign_in(zh(), branding=Branding(logo_url="/static/logo.svg")).text
    assert '<img src="/static/logo.svg" alt="徽标">' in text
    assert csp_of(sign_in(branding=Branding(logo_url="/static/logo.svg")))["img-src"] == (
        "'self' data:"
    )


@pytest.mark.parametrize(
    "logo",
    ["javascript:alert(1)", "//evil.example/logo.png", "data:image/png;base64,AAAA", "logo.png"],
)
def test_a_logo_without_a_safe_origin_is_left_out(logo: str) -> None:
    page = Page(error_response, en(), error=NotFound(), branding=Branding(logo_url=logo))
    assert "<img" not in page.text
    assert csp_of(page)["img-src"] == "'self' data:"


def test_default_language_comes_from_the_branding() -> None:
    bare = environ(ACCEPT=BROWSER_ACCEPT)
    chinese = Branding(default_lang="zh")
    assert (
        heading(Page(error_response, bare, error=NotFound(), branding=chinese).text) == "页面不存在"
    )
    assert heading(Page(error_response, bare, error=NotFound()).text) == "Not found"


@pytest.mark.parametrize("wechat_lang", ["cn", "en"])
def test_branding_from_settings(wechat_lang: str) -> None:
    """Pages follow the browser's language; without one they are English, whatever
    language WeChat's QR page is asked for."""
    config = yaml.safe_dump(
        {
            "public_url": "https://intranet.example.com",
            "wechat": {"app_id": APPID, "app_secret": "s" * 32, "lang": wechat_lang},
            "session": {"secret": "x" * 40},
            "upstreams": [{"prefix": "/", "url": "http://127.0.0.1:8080"}],
            "login": {"mode": "page", "title": "Acme", "logo_url": "/logo.svg", "footer": "IT"},
        }
    )
    branding = Branding.from_settings(parse_settings(config, environ={}))
    assert branding == Branding("Acme", "/logo.svg", "IT", "en")


# --- the signed-out page ---------------------------------------------------------------------


def test_signed_out_page_in_both_languages() -> None:
    clear = ("Set-Cookie", "wechat_gateway=; Max-Age=0; Path=/")
    english = Page(signed_out_response, en(), login_url="/_gateway/login", extra_headers=[clear])
    assert english.status == "200 OK"
    assert heading(english.text) == "You are signed out"
    assert '<a class="button" href="/_gateway/login">Sign in again</a>' in english.text
    assert english.header("Set-Cookie") == clear[1]
    assert english.header("Content-Security-Policy") is not None
    chinese = Page(signed_out_response, zh(), login_url="/_gateway/login")
    assert heading(chinese.text) == "您已退出登录"
    assert '<a class="button" href="/_gateway/login">重新登录</a>' in chinese.text
    assert LATIN_WORD.findall(visible_text(chinese.text)) == []
