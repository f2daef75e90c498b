"""Tests for :mod:`gateway.pages`: who is an API call, and the gateway's own error responses.

The contract: "A request is an API call when its Accept asks for JSON and not HTML, when it
carries X-Requested-With: XMLHttpRequest, or when its method is not GET/HEAD." API calls get
JSON, browsers get an HTML page; either way nothing interpolated is left unescaped and no
error response is cached.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.pages import error_response, is_api_call, render_page

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


class Captured:
    """A WSGI call's status, headers and body."""

    def __init__(self, env: dict[str, Any], error: GatewayError) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.body = b"".join(error_response(env, self.start_response, error))

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
    assert response.status in response.text or api


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


def test_render_page_escapes_its_language_and_status() -> None:
    html = render_page(
        status='500 "><script>', heading="h", message="m", lang='en"><script>'
    ).decode()
    assert "<script>" not in html
    assert '<html lang="en&quot;&gt;&lt;script&gt;">' in html


def test_json_carries_the_detail_verbatim() -> None:
    payload = json.loads(Captured(environ("POST"), BadRequest(HOSTILE)).body)
    assert payload["detail"] == HOSTILE


def test_json_is_utf8() -> None:
    response = Captured(environ("POST"), BadRequest("无法识别的请求"))
    assert json.loads(response.body.decode("utf-8"))["detail"] == "无法识别的请求"


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
