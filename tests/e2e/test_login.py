"""Signing in, end to end: the real ``wechat-gateway serve`` between a browser, WeChat and an app.

Three real processes and sockets take part, as in production:

- the gateway, started by ``GatewayProcess`` (gunicorn, gevent workers, the real config);
- WeChat, played by the project's simulator on a loopback socket (``open_base`` and
  ``api_base`` both point at it). Its qrconnect page authorizes at once when
  ``&sim_user=KEY`` follows ``lang``; its control API injects faults and logs API calls;
- the app behind the gateway, ``EchoUpstream`` (``tests.helpers.upstreams``): a plain
  ``http.server`` that answers every request with JSON of what it received, headers exactly
  as they arrived (name case, order and repeats kept), so spoofed and injected headers are
  seen as the app sees them.

``HttpBrowser`` (``tests.helpers.e2e``) keeps cookies the way a browser does (by name and
path, ``Max-Age=0`` deletes) and follows no redirect by itself, so every hop of the login
is checked on its own. The simulator and the app are the module's ``wechat`` and
``upstream`` (``tests/conftest.py``, ``tests/e2e/conftest.py``); each gateway configuration
is started once per module and shared by the tests that need it.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests

from gateway.auth.session import Session, SessionCodec
from gateway.simulator import Simulator, SimulatorServer
from tests.helpers.e2e import (
    HttpBrowser,
    assert_no_session_set,
    close_http_sessions,
    code_of,
    http_session,
    location,
    query_of,
    set_cookie,
    state_of,
)
from tests.helpers.support import (
    COOKIE,
    HTML_ACCEPT,
    SESSION_SECRET,
    GatewayProcess,
    base_config,
    free_port,
    links,
    session_cookie,
)
from tests.helpers.upstreams import Echo, EchoUpstream, echo_of, parse_echo

LOGIN_COOKIE = "wechat_gateway_login"
TARGET = "/some/path?q=1"
WECHAT_TIMEOUT = 1.0
# How much longer than wechat.timeout a failed login may take to answer.
SLACK = 0.5
_STATE = re.compile(r"[A-Za-z0-9]{1,128}")
# Access and refresh tokens, cookie values: long base64url runs have no business in a log
# or on an error page.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{64,}")
_CORPUS_FILE = Path(__file__).resolve().parents[1] / "data" / "openredirects.jsonl"


# --- the deployment: gateway + simulated WeChat + app -------------------------------------


@dataclass
class Deployment:
    gateway: GatewayProcess
    wechat: SimulatorServer
    upstream: EchoUpstream

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def simulator(self) -> Simulator:
        return self.wechat.simulator

    def browser(self) -> HttpBrowser:
        return HttpBrowser(self.url)

    def begin(self, browser: HttpBrowser, target: str = TARGET) -> str:
        """Start a login at ``target`` as a browser does; return WeChat's authorize URL."""
        challenge = browser.get(self.url + target)
        assert challenge.status_code == 302, (challenge.status_code, challenge.text[:300])
        start = browser.get(challenge.headers["Location"])
        assert start.status_code == 302, (start.status_code, start.text[:300])
        return start.headers["Location"]

    def authorize(self, authorize_url: str, user: str = "alice") -> str:
        """The user confirms on WeChat; return the callback URL WeChat redirects to."""
        url = authorize_url.split("#", 1)[0] + f"&sim_user={user}"
        reply = requests.get(url, allow_redirects=False, timeout=10)
        assert reply.status_code == 302, (reply.status_code, reply.text[:300])
        location = reply.headers["Location"]
        assert location.startswith(self.url + "/_gateway/callback?"), location
        return location

    def login(
        self, browser: HttpBrowser, user: str = "alice", target: str = TARGET
    ) -> requests.Response:
        """A whole login; returns the callback's response."""
        return browser.get(self.authorize(self.begin(browser, target), user))

    def users(self) -> dict[str, dict[str, Any]]:
        reply = requests.get(self.wechat.url + "/_sim/users", timeout=10).json()
        return {user["key"]: user for user in reply["users"]}

    def token_calls(self) -> int:
        reply = requests.get(
            self.wechat.url + "/_sim/calls", params={"endpoint": "access_token"}, timeout=10
        )
        return len(reply.json()["calls"])

    def fault(self, **fault: Any) -> None:
        reply = requests.post(self.wechat.url + "/_sim/faults", json=fault, timeout=10)
        assert reply.status_code == 200, reply.text


def _deploy(
    tmp_path_factory: pytest.TempPathFactory,
    wechat: SimulatorServer,
    upstream: EchoUpstream,
    **overrides: Any,
) -> Iterator[Deployment]:
    website = wechat.simulator.app_of_kind("website")
    overrides["wechat"] = {
        "app_id": website.app_id,
        "app_secret": website.app_secret,
        "open_base": wechat.url,
        "api_base": wechat.url,
        "timeout": WECHAT_TIMEOUT,
        **overrides.get("wechat", {}),
    }
    config = base_config(free_port(), upstream.url, **overrides)
    with GatewayProcess(config, tmp_path_factory.mktemp("gateway")) as gateway:
        yield Deployment(gateway, wechat, upstream)
        close_http_sessions()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Deployment]:
    """The everyday gateway: http public_url, any WeChat user, ``/public/`` open to all."""
    yield from _deploy(tmp_path_factory, wechat, upstream, access={"public": ["/public/"]})


@pytest.fixture(scope="module")
def gw_strict(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Deployment]:
    """``session.secure: true``; only alice (by openid) and zhangsan (by unionid) allowed."""
    simulator = wechat.simulator
    website = simulator.app_of_kind("website").app_id
    allow = [simulator.openid(website, "alice"), simulator.unionid("zhangsan")]
    yield from _deploy(
        tmp_path_factory,
        wechat,
        upstream,
        session={"secure": True},
        access={"allow": allow, "public": ["/public/"]},
    )


@pytest.fixture(scope="module")
def gw_short(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Deployment]:
    """Pending logins expire after one second (``login.state_ttl: 1``)."""
    yield from _deploy(tmp_path_factory, wechat, upstream, login={"state_ttl": 1})


@pytest.fixture(autouse=True)
def _no_leftover_faults(wechat: SimulatorServer) -> Iterator[None]:
    yield
    wechat.simulator.clear_faults()


# --- helpers for assertions ---------------------------------------------------------------


def assert_login_url(url: str, origin: str, target: str) -> None:
    """``url`` starts a login on ``origin`` that comes back to ``target``."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == origin, url
    assert parts.path == "/_gateway/login", url
    assert query_of(url).get("rd", ["/"]) == [target], url


def assert_clean_page(response: requests.Response, *secrets_: str) -> None:
    """A gateway page, not a traceback, with nothing secret on it."""
    body = response.text
    assert "Traceback" not in body
    assert 'File "' not in body
    for secret in secrets_:
        assert secret not in body
    assert not _TOKEN_LIKE.search(body), _TOKEN_LIKE.search(body)


def assert_clean_log(deployment: Deployment, *secrets_: str) -> None:
    log = deployment.gateway.log()
    assert "Traceback" not in log
    website = deployment.simulator.app_of_kind("website")
    for secret in (website.app_secret, *secrets_):
        assert secret not in log
    assert not _TOKEN_LIKE.search(log), _TOKEN_LIKE.search(log)


def get_echo(browser: HttpBrowser, url: str, **kwargs: Any) -> Echo:
    return echo_of(browser.get(url, **kwargs))


def raw_get(
    port: int, target: str, headers: list[tuple[str, str]] | dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` and ``headers`` exactly as written, repeats and odd spellings kept.

    HTTP clients normalise dot segments away and merge header names that differ in case.
    """
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in pairs]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in fields)
    return int(status_line.split(" ")[1]), {k.lower(): v for k, v in parsed.items()}, body


# --- 1. the whole login -------------------------------------------------------------------


def test_login_hop_by_hop(gw: Deployment) -> None:
    browser = gw.browser()
    website = gw.simulator.app_of_kind("website")

    challenge = browser.get(gw.url + TARGET)
    assert challenge.status_code == 302
    assert_login_url(location(challenge), gw.url, TARGET)
    assert_no_session_set(challenge)

    start = browser.get(location(challenge))
    authorize_url = location(start)
    base, _, fragment = authorize_url.partition("#")
    assert fragment in ("", "wechat_redirect")
    parts = urlsplit(base)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == gw.wechat.url + "/connect/qrconnect"
    pairs = [pair.partition("=") for pair in parts.query.split("&")]
    assert [name for name, _, _ in pairs] == [
        "appid",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "lang",
    ]
    raw = {name: value for name, _, value in pairs}
    assert raw["appid"] == website.app_id
    assert raw["redirect_uri"] == quote(gw.url + "/_gateway/callback", safe="")
    assert raw["response_type"] == "code"
    assert raw["scope"] == "snsapi_login"
    assert raw["lang"] == "cn"
    assert _STATE.fullmatch(raw["state"]), raw["state"]
    login_cookie = set_cookie(start, LOGIN_COOKIE)
    assert login_cookie is not None
    assert login_cookie.flag("httponly")
    assert not login_cookie.flag("secure")
    assert raw["state"] not in login_cookie.value  # sealed, not readable

    callback_url = gw.authorize(authorize_url, "alice")
    assert state_of(callback_url) == raw["state"]
    callback = browser.get(callback_url)
    assert callback.status_code == 302
    assert location(callback) == gw.url + TARGET
    session = set_cookie(callback, COOKIE)
    assert session is not None
    assert session.value
    assert session.flag("httponly")
    assert session.attributes.get("samesite", "").lower() == "lax"
    assert session.attributes.get("path") == "/"
    assert not session.flag("secure")
    assert "domain" not in session.attributes
    assert len(f"{session.name}={session.value}") < 4096
    assert int(session.attributes["max-age"]) > 0

    echo = get_echo(browser, location(callback))
    assert echo.target == TARGET
    user = gw.users()["alice"]
    assert echo.wechat_headers() == {
        "X-WeChat-OpenID": user["openids"][website.app_id],
        "X-WeChat-AppID": website.app_id,
        "X-WeChat-UnionID": user["unionid"],
        "X-WeChat-Nickname": "Alice",
        "X-WeChat-Avatar": user["avatar"],
        "X-WeChat-Provider": "wechat",
    }
    assert_clean_log(gw, code_of(callback_url))


@pytest.mark.parametrize(
    ("user", "nickname_header"),
    [
        ("zhangsan", "%E5%BC%A0%E4%B8%89%F0%9F%9A%80"),
        # CR/LF and the would-be header are gone as line breaks; quotes, space, \ and / encoded.
        ("bob", "Bob%20%22%5Co%2F%22X-WeChat-OpenID%3A%20forged"),
    ],
)
def test_identity_headers_reach_the_app(gw: Deployment, user: str, nickname_header: str) -> None:
    browser = gw.browser()
    callback = gw.login(browser, user, "/who?am=i")
    assert location(callback) == gw.url + "/who?am=i"
    session = set_cookie(callback, COOKIE)
    assert session is not None
    assert len(f"{session.name}={session.value}") < 4096

    echo = get_echo(browser, gw.url + "/who?am=i")
    website = gw.simulator.app_of_kind("website").app_id
    expected = gw.users()[user]
    assert echo.wechat_headers() == {
        "X-WeChat-OpenID": expected["openids"][website],
        "X-WeChat-AppID": website,
        "X-WeChat-UnionID": expected["unionid"],
        "X-WeChat-Nickname": nickname_header,
        "X-WeChat-Avatar": expected["avatar"],
        "X-WeChat-Provider": "wechat",
    }


def test_the_apps_cookies_pass_and_the_gateways_do_not(gw: Deployment) -> None:
    browser = gw.browser()
    gw.login(browser)
    session = browser.session_value()
    assert session is not None
    login_state = browser.jar[(LOGIN_COOKIE, "/_gateway/")]
    cookie = (
        f"theme=dark; {COOKIE}={session}; {LOGIN_COOKIE}={login_state}; {COOKIE}x=kept; app_sid=abc"
    )
    echo = echo_of(gw.browser().get(gw.url + "/cookies", headers={"Cookie": cookie}))
    assert echo.value("X-WeChat-OpenID")  # the session was read
    assert echo.value("Cookie") == f"theme=dark; {COOKIE}x=kept; app_sid=abc"

    echo = echo_of(gw.browser().get(gw.url + "/cookies", headers={"Cookie": f"{COOKIE}={session}"}))
    assert echo.value("Cookie") is None


def test_session_in_a_second_cookie_header_line(gw: Deployment) -> None:
    """Two ``Cookie`` lines (joined with ``,`` by the server) still carry the session."""
    browser = gw.browser()
    gw.login(browser)
    cookies = [("Cookie", "theme=dark"), ("Cookie", f"{COOKIE}={browser.session_value()}")]
    status, _, body = raw_get(gw.gateway.port, "/two-lines", [("Accept", "text/html"), *cookies])
    assert status == 200, body[:300]
    echo = parse_echo(body)
    assert echo.value("X-WeChat-AppID") == gw.simulator.app_of_kind("website").app_id
    assert echo.value("Cookie") == "theme=dark"


def test_secure_cookies_when_configured(gw_strict: Deployment) -> None:
    browser = gw_strict.browser()
    start_url = location(browser.get(gw_strict.url + "/"))
    start = browser.get(start_url)
    login_cookie = set_cookie(start, LOGIN_COOKIE)
    assert login_cookie is not None
    assert login_cookie.flag("secure")
    callback = browser.get(gw_strict.authorize(location(start), "alice"))
    assert location(callback) == gw_strict.url + "/"
    session = set_cookie(callback, COOKIE)
    assert session is not None
    assert session.flag("secure")
    assert session.flag("httponly")
    assert session.attributes.get("samesite", "").lower() == "lax"
    assert session.attributes.get("path") == "/"


def test_state_ttl_still_allows_a_quick_login(gw_short: Deployment) -> None:
    for _ in range(3):
        browser = gw_short.browser()
        start = browser.get(gw_short.url + "/_gateway/login?rd=%2Fquick")
        login_cookie = set_cookie(start, LOGIN_COOKIE)
        assert login_cookie is not None
        assert int(login_cookie.attributes["max-age"]) >= 1
        callback = browser.get(gw_short.authorize(location(start)))
        assert location(callback) == gw_short.url + "/quick"


def test_snapshot_identity_is_never_signed_in(gw: Deployment) -> None:
    """Snapshot mode gives a virtual identity: it must not become a person's session."""
    browser = gw.browser()
    callback = browser.get(gw.authorize(gw.begin(browser), "snapshot"))
    assert callback.status_code in (401, 403), callback.status_code
    assert_no_session_set(callback)
    assert browser.session_value() is None
    assert_login_url(links(callback.text)["Try again"], gw.url, TARGET)


# --- 2. requests without a session --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Accept": "application/json"}),
        ("GET", {"Accept": "application/json, text/plain, */*"}),
        ("GET", {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}),
        ("POST", {"Accept": HTML_ACCEPT}),
        ("PUT", {"Accept": HTML_ACCEPT}),
        ("DELETE", {"Accept": HTML_ACCEPT}),
        ("PATCH", {}),
    ],
    ids=["json", "json-plain", "xhr", "post", "put", "delete", "patch"],
)
def test_api_call_without_session_gets_401_json(
    gw: Deployment, method: str, headers: dict[str, str]
) -> None:
    marker = f"/api/items/{secrets.token_hex(4)}?page=2&sort=-name"
    reply = gw.browser().request(method, gw.url + marker, headers=headers, data=b"x=1")
    assert reply.status_code == 401, reply.text[:300]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "Location" not in reply.headers
    assert_login_url(reply.json()["login_url"], gw.url, marker)
    assert_no_session_set(reply)
    assert marker not in gw.upstream.targets


@pytest.mark.parametrize(
    ("method", "accept"),
    [
        ("GET", "text/html,application/json"),
        ("GET", HTML_ACCEPT),
        ("GET", "*/*"),
        ("GET", None),
        ("HEAD", HTML_ACCEPT),
    ],
)
def test_browser_navigation_without_session_is_redirected(
    gw: Deployment, method: str, accept: str | None
) -> None:
    marker = f"/page/{secrets.token_hex(4)}?a=1&b=%2F"
    headers = {} if accept is None else {"Accept": accept}
    reply = http_session().request(
        method, gw.url + marker, headers=headers, allow_redirects=False, timeout=10
    )
    assert reply.status_code == 302
    assert_login_url(location(reply), gw.url, marker)
    assert marker not in gw.upstream.targets


def test_login_url_from_401_leads_back_to_the_original_request(gw: Deployment) -> None:
    browser = gw.browser()
    reply = browser.get(gw.url + "/api/report?year=2024", headers={"Accept": "application/json"})
    login_url = reply.json()["login_url"]
    start = browser.get(login_url)
    callback = browser.get(gw.authorize(location(start)))
    assert location(callback) == gw.url + "/api/report?year=2024"
    echo = get_echo(browser, location(callback), headers={"Accept": "application/json"})
    assert echo.target == "/api/report?year=2024"


# --- 3. attacks ---------------------------------------------------------------------------

SPOOFED = {
    "X-WeChat-OpenID": "spoof-1",
    "x-wechat-openid": "spoof-2",
    "X-WECHAT-OPENID": "spoof-3",
    "X_WeChat_OpenID": "spoof-4",
    "X-Wechat_Openid": "spoof-5",
    "X-WeChat-UnionID": "spoof-6",
    "X-WeChat-Nickname": "spoof-7",
    "X-WeChat-Avatar": "https://spoof-8.example/a.png",
    "X-WeChat-AppID": "spoof-9",
    "X-WeChat-Anything": "spoof-10",
    "x_wechat_unionid": "spoof-11",
}


def _distinct(headers: dict[str, str]) -> dict[str, str]:
    """The first spelling of each header name, case-insensitively."""
    result: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() not in {n.lower() for n in result}:
            result[name] = value
    return result


def _spoof_requests(url: str, cookie: str | None) -> list[Echo]:
    """The request sent with each spoofed header on its own, then with all of them."""
    echoes = []
    base = {"Accept": "application/json"}
    if cookie:
        base["Cookie"] = cookie
    # requests merges names that differ only in case: each spelling goes alone, then every
    # distinct name together.
    variants = [{name: value} for name, value in SPOOFED.items()]
    variants.append(_distinct(SPOOFED))
    http = http_session()
    for headers in variants:
        reply = http.get(url, headers={**base, **headers}, allow_redirects=False, timeout=10)
        echoes.append(echo_of(reply))
    # Every spelling in one request, as separate header lines.
    parts = urlsplit(url)
    status, _, body = raw_get(parts.port or 80, parts.path, [*base.items(), *SPOOFED.items()])
    assert status == 200, body[:300]
    echoes.append(parse_echo(body))
    return echoes


def test_spoofed_identity_headers_on_authenticated_requests(gw: Deployment) -> None:
    browser = gw.browser()
    gw.login(browser, "zhangsan")
    website = gw.simulator.app_of_kind("website").app_id
    user = gw.users()["zhangsan"]
    expected = {
        "X-WeChat-OpenID": user["openids"][website],
        "X-WeChat-AppID": website,
        "X-WeChat-UnionID": user["unionid"],
        "X-WeChat-Nickname": "%E5%BC%A0%E4%B8%89%F0%9F%9A%80",
        "X-WeChat-Avatar": user["avatar"],
        "X-WeChat-Provider": "wechat",
    }
    for echo in _spoof_requests(gw.url + "/private", f"{COOKIE}={browser.session_value()}"):
        assert echo.wechat_headers() == expected
        assert not [v for _, v in echo.headers if "spoof" in v]


def test_spoofed_identity_headers_without_session_are_never_forwarded(gw: Deployment) -> None:
    marker = f"/private/{secrets.token_hex(4)}"
    http = http_session()
    for name, value in SPOOFED.items():
        reply = http.get(
            gw.url + marker,
            headers={name: value, "Accept": "application/json"},
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 401
        reply = http.get(
            gw.url + marker, headers={name: value, "Accept": HTML_ACCEPT}, allow_redirects=False
        )
        assert reply.status_code == 302
    assert marker not in gw.upstream.targets


def test_spoofed_identity_headers_are_stripped_on_public_paths(gw: Deployment) -> None:
    for echo in _spoof_requests(gw.url + "/public/logo.png", None):
        assert echo.target == "/public/logo.png"
        assert echo.wechat_headers() == {}
        assert not [v for _, v in echo.headers if "spoof" in v]


def test_public_path_with_a_session_gets_the_sessions_identity_only(gw: Deployment) -> None:
    browser = gw.browser()
    gw.login(browser, "alice")
    openid = gw.users()["alice"]["openids"][gw.simulator.app_of_kind("website").app_id]
    for echo in _spoof_requests(gw.url + "/public/x.css", f"{COOKIE}={browser.session_value()}"):
        assert echo.value("X-WeChat-OpenID") in (None, openid)
        assert not [v for _, v in echo.headers if "spoof" in v]


@pytest.mark.parametrize(
    "path",
    [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E%2Fprivate",
        "/public/..%2fprivate",
        "/public//../private",
        "/public/;x/../private",
        "/public/..%5cprivate",
        "//public/x",
    ],
)
def test_ambiguous_spellings_of_public_paths_need_a_session(gw: Deployment, path: str) -> None:
    before = len(gw.upstream.targets)
    status, _, _ = raw_get(gw.gateway.port, path, {"Accept": HTML_ACCEPT})
    assert status in (302, 400), status
    assert len(gw.upstream.targets) == before
    # The control: the plain spelling is public.
    status, _, _ = raw_get(gw.gateway.port, "/public/private", {"Accept": HTML_ACCEPT})
    assert status == 200


def test_spoofed_headers_do_not_change_userinfo(gw: Deployment) -> None:
    http = http_session()
    spoof = _distinct(SPOOFED)
    reply = http.get(gw.url + "/_gateway/userinfo", headers=spoof, timeout=10)
    assert reply.status_code == 401
    assert "spoof" not in reply.text

    browser = gw.browser()
    gw.login(browser, "alice")
    reply = http.get(
        gw.url + "/_gateway/userinfo",
        headers={**spoof, "Cookie": f"{COOKIE}={browser.session_value()}"},
        timeout=10,
    )
    assert reply.status_code == 200
    website = gw.simulator.app_of_kind("website").app_id
    assert reply.json()["openid"] == gw.users()["alice"]["openids"][website]
    assert "spoof" not in reply.text


def test_replayed_callback_from_the_same_browser_goes_to_its_target(gw: Deployment) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser, "/replay?x=1"))
    first = browser.get(callback_url)
    assert location(first) == gw.url + "/replay?x=1"
    calls = gw.token_calls()
    again = browser.get(callback_url)
    assert location(again) == gw.url + "/replay?x=1"
    assert_no_session_set(again)
    assert gw.token_calls() == calls
    assert echo_of(browser.get(gw.url + "/replay?x=1")).value("X-WeChat-OpenID")


def test_replayed_callback_without_the_session_is_refused(gw: Deployment) -> None:
    """The same browser, signed out since: the used state is just a reused state."""
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser))
    assert location(browser.get(callback_url)) == gw.url + TARGET
    browser.get(gw.url + "/_gateway/logout")
    assert browser.session_value() is None
    assert (LOGIN_COOKIE, "/_gateway/") in browser.jar
    calls = gw.token_calls()
    replay = browser.get(callback_url)
    assert replay.status_code == 400
    assert_no_session_set(replay)
    assert gw.token_calls() == calls


def test_a_used_state_with_a_new_code_is_refused_even_with_the_old_login_cookie(
    gw: Deployment,
) -> None:
    """The browser's login cookie marks the state used; a copy taken before does not undo it."""
    browser = gw.browser()
    authorize_url = gw.begin(browser)
    old_login_cookie = browser.jar[(LOGIN_COOKIE, "/_gateway/")]
    assert location(browser.get(gw.authorize(authorize_url))) == gw.url + TARGET

    replayer = gw.browser()
    replayer.jar[(LOGIN_COOKIE, "/_gateway/")] = old_login_cookie
    calls = gw.token_calls()
    replay = replayer.get(gw.authorize(authorize_url, "bob"))  # same state, a fresh code
    assert replay.status_code == 400
    assert_no_session_set(replay)
    assert replayer.session_value() is None
    assert gw.token_calls() == calls  # refused before WeChat is asked


def test_replayed_callback_from_anyone_else_is_refused(gw: Deployment) -> None:
    victim = gw.browser()
    callback_url = gw.authorize(gw.begin(victim))
    assert location(victim.get(callback_url)) == gw.url + TARGET
    calls = gw.token_calls()

    no_cookies = gw.browser().get(callback_url)
    assert no_cookies.status_code == 400
    assert_no_session_set(no_cookies)
    assert_clean_page(no_cookies, code_of(callback_url))

    attacker = gw.browser()
    gw.begin(attacker)  # the attacker holds a login cookie of their own
    replay = attacker.get(callback_url)
    assert replay.status_code == 400
    assert_no_session_set(replay)
    assert attacker.session_value() is None

    # The victim's own session, replayed together with someone else's callback, is no help.
    assert gw.token_calls() == calls


def test_callback_in_another_browser_is_refused_and_spends_nothing(gw: Deployment) -> None:
    alice = gw.browser()
    callback_url = gw.authorize(gw.begin(alice))
    other = gw.browser()
    gw.begin(other)
    calls = gw.token_calls()
    for browser in (other, gw.browser()):
        reply = browser.get(callback_url)
        assert reply.status_code == 400
        assert_no_session_set(reply)
        assert browser.session_value() is None
        assert links(reply.text)  # a way to start again
    assert gw.token_calls() == calls
    # No WeChat call was made, so the code is unspent and the right browser still gets in.
    assert location(alice.get(callback_url)) == gw.url + TARGET


@pytest.mark.parametrize(
    "query",
    [
        "code={code}",
        "code={code}&state=",
        "code={code}&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "code={code}&state=" + "a" * 129,
        "code={code}&state={state}-",
        "code={code}&state={state}%00",
        "code={code}&state=%E5%BC%A0{state}",
        "code={code}&state={state}%20",
        "code={code}&state={state_lower}",
    ],
    ids=["missing", "empty", "unknown", "129", "dash", "nul", "cjk", "space", "case"],
)
def test_callback_with_a_bad_state_is_refused(gw: Deployment, query: str) -> None:
    browser = gw.browser()
    authorize_url = gw.begin(browser)
    callback_url = gw.authorize(authorize_url)
    state = state_of(authorize_url)
    if "state_lower" in query and state.lower() == state:
        pytest.skip("this state has no upper-case letter to change")
    bad = (
        gw.url
        + "/_gateway/callback?"
        + query.format(code=code_of(callback_url), state=state, state_lower=state.lower())
    )
    calls = gw.token_calls()
    reply = browser.get(bad)
    assert reply.status_code == 400
    assert_no_session_set(reply)
    assert_clean_page(reply, code_of(callback_url))
    assert gw.token_calls() == calls
    assert location(browser.get(callback_url)) == gw.url + TARGET


def test_expired_state_is_refused(gw_short: Deployment) -> None:
    browser = gw_short.browser()
    callback_url = gw_short.authorize(gw_short.begin(browser))
    time.sleep(2.1)
    calls = gw_short.token_calls()
    reply = browser.get(callback_url)
    assert reply.status_code == 400
    assert_no_session_set(reply)
    assert gw_short.token_calls() == calls


def test_forged_login_cookie_is_refused(gw: Deployment) -> None:
    browser = gw.browser()
    authorize_url = gw.begin(browser)
    callback_url = gw.authorize(authorize_url)
    real = browser.jar[(LOGIN_COOKIE, "/_gateway/")]
    other = SessionCodec("another-secret-of-at-least-32-characters!")
    forged_payload = json.dumps([[state_of(authorize_url), "/", int(time.time()) + 600, 0]])
    calls = gw.token_calls()
    for value in (
        _flip(real),
        other.seal(forged_payload.encode(), purpose=b"login-state", ttl=600),
        SessionCodec(SESSION_SECRET).seal(forged_payload.encode(), purpose=b"session", ttl=600),
        "x" * 5000,
        "",
    ):
        reply = gw.browser().get(callback_url, headers={"Cookie": f"{LOGIN_COOKIE}={value}"})
        assert reply.status_code == 400, value[:40]
        assert_no_session_set(reply)
    assert gw.token_calls() == calls


def _flip(value: str) -> str:
    index = len(value) // 2
    return value[:index] + ("A" if value[index] != "A" else "B") + value[index + 1 :]


def _forged_session_cookies() -> dict[str, str]:
    valid = session_cookie()
    while "-" not in valid and "_" not in valid:  # "plus-slash" must differ from it
        valid = session_cookie()
    codec = SessionCodec(SESSION_SECRET)
    now = int(time.time())
    return {
        "random": secrets.token_urlsafe(120),
        "flipped": _flip(valid),
        "truncated": valid[:-4],
        "extended": valid + "AAAA",
        "other-secret": session_cookie(secret="another-secret-of-at-least-32-characters!"),
        "expired": session_cookie(lifetime=-10),
        "expired-just-now": codec.encode(
            Session("oX", "wx0123456789abcdef", None, "n", "", now - 100, now)
        ),
        "wrong-purpose": codec.seal(b'["oX","wx","u","n","",0,null,null]', purpose=b"x", ttl=60),
        "login-purpose": codec.seal(b"[]", purpose=b"login-state", ttl=60),
        "not-a-session": codec.seal(b'{"openid":"oX"}', purpose=b"session", ttl=60),
        "huge": "A" * 6000,
        "quoted": '"abc def"',
        "empty": "",
        "padding": valid + "==",
        "plus-slash": valid.replace("-", "+").replace("_", "/"),
    }


@pytest.mark.parametrize("kind", sorted(_forged_session_cookies()))
def test_forged_session_cookie_is_no_session(gw: Deployment, kind: str) -> None:
    value = _forged_session_cookies()[kind]
    marker = f"/forged/{kind}"
    cookie = f"{COOKIE}={value}"
    http = http_session()
    page = http.get(
        gw.url + marker, headers={"Cookie": cookie, "Accept": HTML_ACCEPT}, allow_redirects=False
    )
    assert page.status_code == 302
    assert_login_url(location(page), gw.url, marker)
    api = http.get(
        gw.url + marker,
        headers={"Cookie": cookie, "Accept": "application/json"},
        allow_redirects=False,
    )
    assert api.status_code == 401
    post = http.post(gw.url + marker, headers={"Cookie": cookie}, data=b"x", allow_redirects=False)
    assert post.status_code == 401
    info = http.get(gw.url + "/_gateway/userinfo", headers={"Cookie": cookie})
    assert info.status_code == 401
    assert marker not in gw.upstream.targets


def test_valid_minted_cookie_is_a_session(gw: Deployment) -> None:
    """The control for the forged cookies: the same helper's valid value does get in."""
    website = gw.wechat.simulator.app_of_kind("website").app_id
    cookie = session_cookie(app_id=website)
    echo = echo_of(http_session().get(gw.url + "/minted", headers={"Cookie": f"{COOKIE}={cookie}"}))
    assert echo.value("X-WeChat-OpenID") == "oTestOpenID0000000000000001"
    assert echo.value("X-WeChat-AppID") == website


def test_a_cookie_sealed_for_another_app_is_no_session(gw: Deployment) -> None:
    """Same secret, other app id (e.g. a second deployment): its openid names someone else."""
    cookie = session_cookie(app_id="wx00000000000000ff")
    reply = http_session().get(
        gw.url + "/minted",
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    )
    assert reply.status_code == 302
    assert "/_gateway/login" in reply.headers["Location"]


HOST_TRICKS = [
    {"Host": "evil.example"},
    {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    {"Host": "evil.example:8443", "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil"},
    {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Original-URL": "//evil.example"},
]


@pytest.mark.parametrize("tricks", HOST_TRICKS, ids=["host", "xfh", "both", "proto"])
def test_host_headers_never_change_a_redirect(gw: Deployment, tricks: dict[str, str]) -> None:
    browser = gw.browser()
    challenge = browser.get(gw.url + TARGET, headers=tricks)
    assert_login_url(location(challenge), gw.url, TARGET)

    api = browser.get(gw.url + TARGET, headers={**tricks, "Accept": "application/json"})
    assert_login_url(api.json()["login_url"], gw.url, TARGET)

    start = browser.get(location(challenge), headers=tricks)
    authorize_url = location(start)
    assert query_of(authorize_url.split("#")[0])["redirect_uri"] == [gw.url + "/_gateway/callback"]
    callback = browser.get(gw.authorize(authorize_url), headers=tricks)
    assert location(callback) == gw.url + TARGET

    replay = browser.get(gw.url + "/_gateway/login?rd=%2Fx", headers=tricks)
    assert query_of(location(replay).split("#")[0])["redirect_uri"] == [
        gw.url + "/_gateway/callback"
    ]
    logout = browser.get(gw.url + "/_gateway/logout?rd=%2Fbye", headers=tricks)
    assert location(logout) == gw.url + "/bye"


# --- 4. declined --------------------------------------------------------------------------


def test_declined_login_offers_to_try_again(gw: Deployment) -> None:
    browser = gw.browser()
    authorize_url = gw.begin(browser, "/after/decline?x=1")
    calls = gw.token_calls()
    declined = gw.url + "/_gateway/callback?state=" + state_of(authorize_url)
    reply = browser.get(declined)
    assert reply.status_code == 401
    assert reply.headers["Content-Type"].startswith("text/html")
    assert_no_session_set(reply)
    assert_clean_page(reply)
    try_again = links(reply.text)["Try again"]
    assert_login_url(try_again, gw.url, "/after/decline?x=1")
    assert gw.token_calls() == calls
    # The link works.
    callback = browser.get(gw.authorize(location(browser.get(try_again))))
    assert location(callback) == gw.url + "/after/decline?x=1"


def test_cancel_on_the_wechat_page_offers_to_try_again(gw: Deployment) -> None:
    browser = gw.browser()
    authorize_url = gw.begin(browser)
    page = requests.get(authorize_url.split("#")[0], timeout=10)
    cancel = re.search(r'href="([^"]*cancel=1[^"]*)"', page.text)
    assert cancel is not None, page.text[:500]
    href = html.unescape(cancel.group(1))
    url = gw.wechat.url + href if href.startswith("/") else href
    declined = requests.get(url, allow_redirects=False, timeout=10)
    reply = browser.get(location(declined))
    assert reply.status_code == 401
    assert_no_session_set(reply)
    assert_login_url(links(reply.text)["Try again"], gw.url, TARGET)


# --- 5. WeChat failing during login -------------------------------------------------------

FAULTS = [
    ({"endpoint": "access_token", "mode": "errcode", "errcode": -1, "times": 50}, 503),
    ({"endpoint": "access_token", "mode": "errcode", "errcode": 45011, "times": 50}, 503),
    ({"endpoint": "access_token", "mode": "errcode", "errcode": 40029}, 502),
    ({"endpoint": "access_token", "mode": "errcode", "errcode": 40125}, 502),
    ({"endpoint": "access_token", "mode": "http_status", "status": 500}, 502),
    ({"endpoint": "access_token", "mode": "garbage"}, 502),
    ({"endpoint": "access_token", "mode": "garbage", "body": '{"errcode": "x"'}, 502),
    ({"endpoint": "access_token", "mode": "delay", "delay": 2.5}, 504),
    ({"endpoint": "access_token", "mode": "reset"}, 502),
    ({"endpoint": "userinfo", "mode": "errcode", "errcode": -1, "times": 50}, 503),
    ({"endpoint": "userinfo", "mode": "errcode", "errcode": 45011, "times": 50}, 503),
    ({"endpoint": "userinfo", "mode": "errcode", "errcode": 40001}, 502),
    ({"endpoint": "userinfo", "mode": "http_status", "status": 502}, 502),
    ({"endpoint": "userinfo", "mode": "garbage"}, 502),
    ({"endpoint": "userinfo", "mode": "delay", "delay": 2.5}, 504),
    ({"endpoint": "userinfo", "mode": "reset"}, 502),
]


@pytest.mark.parametrize(
    ("fault", "status"),
    FAULTS,
    ids=[f"{f['endpoint']}-{f.get('errcode', f.get('status', f['mode']))}" for f, _ in FAULTS],
)
def test_wechat_failure_gives_a_clean_page(
    gw: Deployment, fault: dict[str, Any], status: int
) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser, "/failing?x=1"))
    gw.fault(**fault)
    started = time.monotonic()
    reply = browser.get(callback_url)
    elapsed = time.monotonic() - started
    assert reply.status_code == status, reply.text[:500]
    assert elapsed < WECHAT_TIMEOUT + SLACK, elapsed
    assert reply.headers["Content-Type"].startswith("text/html")
    assert_no_session_set(reply)
    assert browser.session_value() is None
    assert_clean_page(reply, code_of(callback_url), gw.simulator.app_of_kind("website").app_secret)
    assert_login_url(links(reply.text)["Try again"], gw.url, "/failing?x=1")
    assert_clean_log(gw)


@pytest.mark.parametrize("endpoint", ["access_token", "userinfo"])
def test_the_code_of_a_failed_login_is_not_logged(gw: Deployment, endpoint: str) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser))
    gw.fault(
        endpoint=endpoint, mode="errcode", errcode=40029 if endpoint == "access_token" else 40001
    )
    assert browser.get(callback_url).status_code == 502
    assert_clean_log(gw, code_of(callback_url), state_of(callback_url))


def test_try_again_after_a_failure_signs_in(gw: Deployment) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser, "/again"))
    gw.fault(endpoint="access_token", mode="errcode", errcode=40029)
    failed = browser.get(callback_url)
    assert failed.status_code == 502
    start = browser.get(links(failed.text)["Try again"])
    callback = browser.get(gw.authorize(location(start)))
    assert location(callback) == gw.url + "/again"
    assert browser.session_value()


@pytest.mark.parametrize("endpoint", ["access_token", "userinfo"])
@pytest.mark.parametrize("errcode", [-1])
def test_one_transient_error_is_retried(gw: Deployment, endpoint: str, errcode: int) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser, "/retried"))
    gw.fault(endpoint=endpoint, mode="errcode", errcode=errcode, times=1)
    started = time.monotonic()
    callback = browser.get(callback_url)
    assert time.monotonic() - started < WECHAT_TIMEOUT + SLACK
    assert location(callback) == gw.url + "/retried"
    assert browser.session_value()
    assert_clean_log(gw, code_of(callback_url))


# --- 6. safe targets and logout -----------------------------------------------------------


def _hostile_targets() -> list[str]:
    lines = [json.loads(line) for line in _CORPUS_FILE.read_text("utf-8").splitlines() if line]
    hostile = [entry["decoded"] for entry in lines if not entry["expect_valid"]]
    # A fixed, spread-out sample keeps the module fast and the cases stable.
    sample = hostile[:: max(1, len(hostile) // 40)][:40]
    return [
        *sample,
        "//evil.com",
        "/\\evil.com",
        "https://evil.com",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.com/",
        "/%2F%2Fevil.com",
        "/\t/evil.com",
        "https:evil.com",
        "\\\\evil.com",
    ]


HOSTILE = _hostile_targets()


def test_corpus_is_there() -> None:
    assert len(HOSTILE) >= 45


@pytest.mark.parametrize("rd", HOSTILE, ids=[f"t{i:02d}" for i in range(len(HOSTILE))])
def test_hostile_rd_never_leaves_the_origin(gw: Deployment, rd: str) -> None:
    browser = gw.browser()
    start = browser.get(gw.url + "/_gateway/login?rd=" + quote(rd.encode("utf-8"), safe=""))
    callback = browser.get(gw.authorize(location(start)))
    assert location(callback) == gw.url + "/"


@pytest.mark.parametrize(
    "path", ["//evil.com/x", "/%2F%2Fevil.com", "/\\evil.com", "/redirect?url=//evil.com"]
)
def test_hostile_request_path_never_leaves_the_origin(gw: Deployment, path: str) -> None:
    status, headers, _ = raw_get(gw.gateway.port, path, {"Accept": HTML_ACCEPT})
    if status == 400:
        return
    assert status == 302
    browser = gw.browser()
    start = browser.get(headers["location"])
    callback = browser.get(gw.authorize(location(start)))
    final = location(callback)
    assert final.startswith(gw.url + "/")
    assert not final.startswith(gw.url + "//")
    assert final == gw.url + "/"


@pytest.mark.parametrize(
    "rd", ["/a/b?c=d", "/", "/x#frag", "/projects/group%2Fname?tab=1", "{origin}/abs?y=2"]
)
def test_benign_rd_is_kept(gw: Deployment, rd: str) -> None:
    rd = rd.format(origin=gw.url)
    browser = gw.browser()
    start = browser.get(gw.url + "/_gateway/login?rd=" + quote(rd, safe=""))
    callback = browser.get(gw.authorize(location(start)))
    expected = rd if rd.startswith("http") else gw.url + rd
    assert location(callback) == expected


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_clears_the_session(gw: Deployment, method: str) -> None:
    browser = gw.browser()
    gw.login(browser)
    assert browser.session_value()
    reply = browser.request(method, gw.url + "/_gateway/logout?rd=%2Fbye%3Fx%3D1")
    assert location(reply) == gw.url + "/bye?x=1"
    cleared = set_cookie(reply, COOKIE)
    assert cleared is not None
    assert cleared.value == ""
    assert cleared.attributes.get("max-age") == "0"
    assert cleared.attributes.get("path") == "/"
    assert browser.session_value() is None
    assert browser.get(gw.url + "/after-logout").status_code == 302

    gw.login(browser)
    page = browser.request(method, gw.url + "/_gateway/logout")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert set_cookie(page, COOKIE).attributes.get("max-age") == "0"  # type: ignore[union-attr]
    assert browser.session_value() is None


@pytest.mark.parametrize("rd", [*HOSTILE[-9:], "http://evil.com/", "/%5Cevil.com"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_with_hostile_rd_stays_home(gw: Deployment, method: str, rd: str) -> None:
    browser = gw.browser()
    gw.login(browser)
    reply = browser.request(method, gw.url + "/_gateway/logout?rd=" + quote(rd, safe=""))
    if reply.status_code == 200:
        assert reply.headers["Content-Type"].startswith("text/html")
    else:
        target = location(reply)
        assert target.startswith(gw.url + "/") and not target.startswith(gw.url + "//")
    cleared = set_cookie(reply, COOKIE)
    assert cleared is not None
    assert cleared.attributes.get("max-age") == "0"


# --- 7. userinfo --------------------------------------------------------------------------


def test_userinfo(gw: Deployment) -> None:
    browser = gw.browser()
    reply = browser.get(gw.url + "/_gateway/userinfo")
    assert reply.status_code == 401
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["WWW-Authenticate"] == 'WeChat realm="wechat-gateway"'
    assert set(reply.json()) == {"error", "message", "login_url"}
    assert reply.json()["error"] == "unauthorized"
    assert_login_url(reply.json()["login_url"], gw.url, "/")

    gw.login(browser, "zhangsan")
    reply = browser.get(gw.url + "/_gateway/userinfo")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "no-store" in reply.headers.get("Cache-Control", "")
    website = gw.simulator.app_of_kind("website").app_id
    user = gw.users()["zhangsan"]
    # JSON has its own escaping: the nickname is the one WeChat gave, with the control
    # characters the header removes removed here too.
    assert "\x14" in user["nickname"]
    assert reply.json() == {
        "openid": user["openids"][website],
        "unionid": user["unionid"],
        "app_id": website,
        "nickname": user["nickname"].replace("\x14", ""),
        "avatar": user["avatar"],
        "provider": "wechat",
    }


# --- 8. the allow list --------------------------------------------------------------------


def test_user_not_on_the_allow_list_is_refused_at_callback(gw_strict: Deployment) -> None:
    browser = gw_strict.browser()
    callback = gw_strict.login(browser, "bob", "/secret")
    assert callback.status_code == 403
    assert_no_session_set(callback)
    assert browser.session_value() is None
    website = gw_strict.simulator.app_of_kind("website").app_id
    openid = gw_strict.users()["bob"]["openids"][website]
    assert openid in callback.text
    assert_login_url(links(callback.text)["Sign in with another account"], gw_strict.url, "/secret")


def test_user_not_on_the_allow_list_is_refused_on_requests(gw_strict: Deployment) -> None:
    website = gw_strict.simulator.app_of_kind("website").app_id
    bob = gw_strict.users()["bob"]
    cookie = session_cookie(bob["openids"][website], unionid=bob["unionid"], app_id=website)
    http = http_session()
    page = http.get(
        gw_strict.url + "/secret", headers={"Cookie": f"{COOKIE}={cookie}", "Accept": HTML_ACCEPT}
    )
    assert page.status_code == 403
    assert bob["openids"][website] in page.text
    assert "/_gateway/logout" in links(page.text).get("Sign out", "")
    api = http.get(
        gw_strict.url + "/secret",
        headers={"Cookie": f"{COOKIE}={cookie}", "Accept": "application/json"},
    )
    assert api.status_code == 403
    assert "/secret" not in gw_strict.upstream.targets


def test_public_paths_stay_public_without_identity_for_refused_users(
    gw_strict: Deployment,
) -> None:
    website = gw_strict.simulator.app_of_kind("website").app_id
    bob = gw_strict.users()["bob"]
    cookie = session_cookie(bob["openids"][website], unionid=bob["unionid"], app_id=website)
    reply = http_session().get(
        gw_strict.url + "/public/style.css",
        headers={"Cookie": f"{COOKIE}={cookie}", "X-WeChat-OpenID": "spoof"},
    )
    echo = echo_of(reply)
    assert echo.wechat_headers() == {}
    assert echo.value("Cookie") is None


@pytest.mark.parametrize("user", ["alice", "zhangsan"])
def test_allow_list_by_openid_and_by_unionid(gw_strict: Deployment, user: str) -> None:
    browser = gw_strict.browser()
    callback = gw_strict.login(browser, user, "/allowed")
    assert location(callback) == gw_strict.url + "/allowed"
    echo = get_echo(browser, gw_strict.url + "/allowed")
    website = gw_strict.simulator.app_of_kind("website").app_id
    assert echo.value("X-WeChat-OpenID") == gw_strict.users()[user]["openids"][website]
