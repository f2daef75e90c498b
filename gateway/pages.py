"""The gateway's own responses: HTML pages for people, JSON for API calls.

Every page the gateway renders (errors now; sign-in and signed-out pages later) shares one
template, ``templates/page.html``. Everything interpolated into it is escaped here.
``error_response`` is the single place a ``GatewayError`` becomes a response.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from http import HTTPStatus
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from gateway.errors import GatewayError, MethodNotAllowed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_NO_STORE = ("Cache-Control", "no-store")


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


@cache
def _template() -> Template:
    text = resources.files("gateway").joinpath("templates/page.html").read_text("utf-8")
    return Template(text)


def render_page(
    *,
    status: str,
    heading: str,
    message: str,
    detail: str = "",
    actions: Iterable[tuple[str, str]] = (),
    lang: str = "en",
) -> bytes:
    """A full HTML page; ``actions`` are (label, href) links shown as buttons."""
    links = "".join(
        f'<a class="button" href="{escape(href)}">{escape(label)}</a>' for label, href in actions
    )
    html = _template().substitute(
        lang=escape(lang),
        title=escape(heading),
        status=escape(status),
        heading=escape(heading),
        message=escape(message),
        detail=f'<p class="detail">{escape(detail)}</p>' if detail else "",
        actions=f'<div class="actions">{links}</div>' if links else "",
    )
    return html.encode("utf-8")


def respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    *,
    head_only: bool = False,
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        _NO_STORE,
        ("X-Content-Type-Options", "nosniff"),
        *extra_headers,
    ]
    start_response(status, headers)
    return [] if head_only else [body]


def json_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    payload: object,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return respond(
        start_response,
        status,
        body,
        "application/json; charset=utf-8",
        extra_headers,
        head_only=environ.get("REQUEST_METHOD") == "HEAD",
    )


def html_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    body: bytes,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    return respond(
        start_response,
        status,
        body,
        "text/html; charset=utf-8",
        extra_headers,
        head_only=environ.get("REQUEST_METHOD") == "HEAD",
    )


def error_response(
    environ: WSGIEnvironment, start_response: StartResponse, error: GatewayError
) -> list[bytes]:
    """The single place a GatewayError becomes a response: HTML for people, JSON for APIs."""
    status = f"{error.status} {HTTPStatus(error.status).phrase}"
    headers = list(error.extra_headers)
    if isinstance(error, MethodNotAllowed):
        headers.append(("Allow", ", ".join(error.allowed)))
    if is_api_call(environ):
        payload: dict[str, object] = {"error": error.title, "message": error.hint}
        if error.detail:
            payload["detail"] = error.detail
        for _label, href in error.actions:
            if "/_gateway/login" in href:
                payload["login_url"] = href
        return json_response(environ, start_response, status, payload, headers)
    body = render_page(
        status=status,
        heading=error.title,
        message=error.hint,
        detail=error.detail,
        actions=error.actions,
    )
    return html_response(environ, start_response, status, body, headers)
