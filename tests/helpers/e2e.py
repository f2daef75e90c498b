"""A browser for end-to-end tests, on ``requests``, and what reads the gateway's answers.

``HttpBrowser`` keeps the gateway's cookies the way a browser does (by name and path,
``Max-Age=0`` deletes) and follows no redirect by itself, so every hop of a login is
checked on its own. Its sessions, and any other ``http_session``, ignore the environment's
proxy settings; close them with ``close_http_sessions`` before the gateway stops (gunicorn
waits for open keep-alive connections). ``set_cookie`` reads one ``Set-Cookie`` of a
response, ``location`` its redirect, ``state_of`` and ``code_of`` the OAuth parameters of a
URL.

The raw-socket counterpart, for requests written exactly as given, is ``tests.helpers.raw_e2e``.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.helpers.support import COOKIE, HTML_ACCEPT


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]  # lower-cased attribute names; flags map to ""
    raw: str

    def flag(self, name: str) -> bool:
        return name.lower() in self.attributes


def set_cookies(response: requests.Response) -> list[SetCookie]:
    result = []
    for header in response.raw.headers.getlist("Set-Cookie"):
        pair, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = pair.partition("=")
        parsed = {}
        for attribute in attributes:
            key, _, val = attribute.partition("=")
            parsed[key.strip().lower()] = val.strip()
        result.append(SetCookie(name, value, parsed, header))
    return result


def set_cookie(response: requests.Response, name: str) -> SetCookie | None:
    found = [c for c in set_cookies(response) if c.name == name]
    assert len(found) <= 1, f"{name} set {len(found)} times"
    return found[0] if found else None


# Every client session, closed before a gateway stops: gunicorn waits for open
# keep-alive connections on shutdown.
_CLIENTS: list[requests.Session] = []


def http_session() -> requests.Session:
    """A ``requests`` session that uses no proxy and keeps no cookie (``HttpBrowser`` keeps
    them), closed by ``close_http_sessions``."""
    http = requests.Session()
    _CLIENTS.append(http)
    http.trust_env = False
    # Cookies are kept by HttpBrowser, exactly; requests' own jar would blur them.
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return http


def close_http_sessions() -> None:
    """Close every session ``http_session`` opened, before a gateway stops."""
    while _CLIENTS:
        _CLIENTS.pop().close()


class HttpBrowser:
    """Keeps the gateway's cookies by name and path and follows no redirect on its own."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.jar: dict[tuple[str, str], str] = {}
        self.http = http_session()

    def cookie_header(self, path: str) -> str:
        return "; ".join(
            f"{name}={value}" for (name, scope), value in self.jar.items() if path.startswith(scope)
        )

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        sent = {"Accept": HTML_ACCEPT, **(headers or {})}
        own = url.startswith(self.origin + "/")
        if own:
            cookies = [self.cookie_header(urlsplit(url).path), sent.pop("Cookie", "")]
            joined = "; ".join(c for c in cookies if c)
            if joined:
                sent["Cookie"] = joined
        response = self.http.request(
            method, url, headers=sent, allow_redirects=False, timeout=15, **kwargs
        )
        if own:
            for cookie in set_cookies(response):
                key = (cookie.name, cookie.attributes.get("path", "/"))
                if cookie.attributes.get("max-age") == "0" or not cookie.value:
                    self.jar.pop(key, None)
                else:
                    self.jar[key] = cookie.value
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def session_value(self) -> str | None:
        return self.jar.get((COOKIE, "/"))


# --- reading the gateway's answers -------------------------------------------------------


def location(response: requests.Response) -> str:
    assert response.status_code in (302, 303, 307), (response.status_code, response.text[:300])
    return response.headers["Location"]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def code_of(callback_url: str) -> str:
    return query_of(callback_url)["code"][0]


def state_of(url: str) -> str:
    return query_of(url.split("#", 1)[0])["state"][0]


def assert_no_session_set(response: requests.Response) -> None:
    cookie = set_cookie(response, COOKIE)
    assert cookie is None or cookie.value == "", cookie
