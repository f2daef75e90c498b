"""Who may reach what, end to end: the real ``wechat-gateway serve`` with its access rules.

Three gateways are started once for the module, each in front of ``RawUpstream`` apps that
record every request byte for byte (and answer with what they received, so the client sees
the app's view too):

- ``gw_allow`` (three workers): ``access.allow_file``, rewritten under the running server
  to show that every worker follows it, fails closed without it, and recovers; the 403
  page; ``access.api_paths``; ``access.allow_preflight: false``.
- ``gw_public``: ``access.public`` rules, attacked with every spelling of ``/admin`` that
  might pass for ``/static/...``, and with every spelling of a client identity header; CORS
  preflights, and ``OPTIONS`` requests dressed as preflights that carry a body.
- ``gw_multi``: several upstreams with their own rules (``allow``, ``public``,
  ``strip_prefix``, ``host``), the session shared across subdomains by
  ``session.cookie_domain``, and ``redirect_domains``. Its ``public_url`` is
  ``http://login.example.test:PORT``: the client connects to loopback and names the host in
  ``Host``, the way DNS would have brought it there.

WeChat is the project's simulator, seen through its website app (``wechat_app``); signing
in goes through it hop by hop. ``wechat_app`` and the default app ``raw`` come from
``tests/e2e/conftest.py``. Identities that need no login (a user removed from a list, a user
on one upstream only) are minted cookies. ``send`` and ``RawBrowser``
(``tests.helpers.raw_e2e``, shared with the forward-auth and nginx tests) write raw sockets,
so paths and headers reach the gateway exactly as written (HTTP libraries normalise
``/../`` and merge header spellings).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import pytest

from tests.helpers.raw_e2e import SPOOFS, RawBrowser, Reply, WeChat, rd_of, send, start_gateway
from tests.helpers.support import (
    COOKIE,
    HTML_ACCEPT,
    GatewayProcess,
    free_port,
    links,
    session_cookie,
)
from tests.helpers.upstreams import RawUpstream, Seen, is_identity_header

#: How long every worker may take to follow a changed allow file.
RELOAD_BUDGET = 2.5


def arrived(upstream: RawUpstream, since: int) -> list[Seen]:
    return list(upstream.seen[since:])


# =============================================================================================
# 1. Allow lists: the allow file under a running three-worker server, and the 403
# =============================================================================================

#: Allowed by ``access.allow`` itself: stays allowed whatever happens to the file.
FIXED_ID = "oFixedOperator0000000000001"


@dataclass
class AllowDeployment:
    gateway: GatewayProcess
    wechat: WeChat
    upstream: RawUpstream
    allow_file: Path

    @property
    def port(self) -> int:
        return self.gateway.port

    def worker_pids(self) -> set[str]:
        return set(re.findall(r"Booting worker with pid: (\d+)", self.gateway.log()))

    def reloads_since(self, offset: int) -> set[str]:
        """Workers that re-read (or failed to read) the allow file after log ``offset``."""
        return set(
            re.findall(
                r"\[(\d+)\] \[(?:INFO|ERROR)\] gateway\.access: allow file ",
                self.gateway.log()[offset:],
            )
        )

    def burst(self, cookie: str, n: int = 12) -> list[int]:
        """``n`` concurrent requests, each on a fresh connection: spread over the workers."""
        headers = [("Cookie", f"{COOKIE}={cookie}"), ("Accept", "application/json")]
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            replies = pool.map(lambda _: send(self.port, "/team/page", headers), range(n))
            return [reply.status for reply in replies]

    def write(self, text: str | bytes, *, atomic: bool) -> int:
        """Change the allow file; return the log offset just before the change."""
        offset = len(self.gateway.log())
        data = text.encode() if isinstance(text, str) else text
        if atomic:
            fresh = self.allow_file.with_name(f".allow-{secrets.token_hex(4)}")
            fresh.write_bytes(data)
            os.replace(fresh, self.allow_file)
        else:
            with self.allow_file.open("r+b" if self.allow_file.exists() else "wb") as file:
                file.truncate(0)
                file.write(data)
        return offset

    def converge(self, offset: int, expected: dict[str, int]) -> float:
        """Wait until every worker has re-read the file and every request of several bursts
        gets its expected status (cookie -> status); return how long that took."""
        started = time.monotonic()
        deadline = started + RELOAD_BUDGET
        workers = self.worker_pids()
        assert len(workers) == 3, workers
        good_bursts = 0
        seen: dict[str, list[int]] = {}
        while time.monotonic() < deadline:
            seen = {cookie: self.burst(cookie) for cookie in expected}
            if all(set(seen[c]) == {status} for c, status in expected.items()):
                good_bursts += 1
            else:
                good_bursts = 0
            if good_bursts >= 3 and self.reloads_since(offset) >= workers:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(
            f"not every worker followed the allow file within {RELOAD_BUDGET}s: last statuses"
            f" {seen}, workers {workers}, re-read by {self.reloads_since(offset)}"
        )


@pytest.fixture(scope="module")
def gw_allow(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[AllowDeployment]:
    tmp = tmp_path_factory.mktemp("allow")
    allow_file = tmp / "allow.txt"
    allow_file.write_text(baseline_allow_file(wechat_app), encoding="utf-8")
    with start_gateway(
        tmp,
        wechat_app,
        raw.url,
        server={"workers": 3},
        access={
            "allow": [FIXED_ID],
            "allow_file": str(allow_file),
            "api_paths": ["/api/"],
            "allow_preflight": False,
        },
    ) as gateway:
        yield AllowDeployment(gateway, wechat_app, raw, allow_file)


def baseline_allow_file(wechat: WeChat) -> str:
    """alice by openid, zhangsan by unionid; bob only in comments."""
    return (
        "# who may use the team pages\n"
        "\n"
        f"   {wechat.openid('alice')}   # alice, by openid\n"
        f"# {wechat.openid('bob')}  (bob left the team)\n"
        f"{wechat.unionid('zhangsan')}\n"
        "\n"
    )


def test_the_allow_file_is_read_by_every_worker(gw_allow: AllowDeployment) -> None:
    wechat = gw_allow.wechat
    zhangsan_elsewhere = session_cookie(
        "oZhangsanInAnotherApp000001", unionid=wechat.unionid("zhangsan"), app_id=wechat.app.app_id
    )
    for _ in range(3):
        assert set(gw_allow.burst(wechat.cookie("alice"))) == {200}
        assert set(gw_allow.burst(wechat.cookie("bob"))) == {403}
        # A unionid entry lets its user in under any openid (another app's, say).
        assert set(gw_allow.burst(zhangsan_elsewhere)) == {200}
        fixed = session_cookie(FIXED_ID, unionid=None, app_id=wechat.app.app_id)
        assert set(gw_allow.burst(fixed)) == {200}
    # Comment text is not an entry, not even the part that looks like an id.
    for text in ("#", "(bob", "left", "alice,", "by"):
        cookie = session_cookie(text, unionid=text, app_id=wechat.app.app_id)
        assert gw_allow.burst(cookie, 2) == [403, 403]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic-rename", "in-place"])
def test_allow_file_changes_reach_every_worker_without_restart(
    gw_allow: AllowDeployment, atomic: bool
) -> None:
    wechat = gw_allow.wechat
    alice, bob = wechat.cookie("alice"), wechat.cookie("bob")
    try:
        offset = gw_allow.write(
            baseline_allow_file(wechat) + f"{wechat.openid('bob')}  # back again\n", atomic=atomic
        )
        gw_allow.converge(offset, {bob: 200, alice: 200})
        offset = gw_allow.write(f"{wechat.openid('bob')}\n", atomic=atomic)
        gw_allow.converge(offset, {bob: 200, alice: 403})
    finally:
        offset = gw_allow.write(baseline_allow_file(wechat), atomic=atomic)
        gw_allow.converge(offset, {bob: 403, alice: 200})


def test_a_missing_or_unreadable_allow_file_allows_no_one_from_it(
    gw_allow: AllowDeployment,
) -> None:
    wechat = gw_allow.wechat
    alice = wechat.cookie("alice")
    fixed = session_cookie(FIXED_ID, unionid=None, app_id=wechat.app.app_id)
    offset = len(gw_allow.gateway.log())
    gw_allow.allow_file.unlink()
    try:
        gw_allow.converge(offset, {alice: 403, fixed: 200})
        assert "unreadable, it allows no one" in gw_allow.gateway.log()[offset:]
        # Nothing but comments: no one from the file (never "anyone").
        offset = gw_allow.write("# nobody yet\n\n", atomic=False)
        gw_allow.converge(offset, {alice: 403, fixed: 200})
        offset = gw_allow.write(
            b"\xff\xfe not utf-8\n" + wechat.openid("alice").encode(), atomic=True
        )
        gw_allow.converge(offset, {alice: 403, fixed: 200})
    finally:
        offset = gw_allow.write(baseline_allow_file(wechat), atomic=True)
        gw_allow.converge(offset, {alice: 200, fixed: 200})
    assert "Traceback" not in gw_allow.gateway.log()


def test_not_allowed_gets_a_403_page_that_names_the_openid_and_signs_out(
    gw_allow: AllowDeployment,
) -> None:
    wechat = gw_allow.wechat
    bob = wechat.openid("bob")
    before = len(gw_allow.upstream.seen)
    page = send(
        gw_allow.port,
        "/team/page",
        [("Cookie", f"{COOKIE}={wechat.cookie('bob')}"), ("Accept", HTML_ACCEPT)],
    )
    assert page.status == 403
    assert (page.value("Content-Type") or "").startswith("text/html")
    assert bob in page.text
    actions = links(page.text)
    assert urlsplit(actions["Sign out"]).path == "/_gateway/logout", actions
    assert urlsplit(actions["Sign in with another account"]).path == "/_gateway/login", actions
    cleared = page.set_cookie(COOKIE)
    assert cleared is not None, page.headers
    assert cleared["value"] == ""
    assert cleared["max-age"] == "0"
    assert cleared["path"] == "/"
    assert arrived(gw_allow.upstream, before) == []


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", [("Accept", "application/json")]),
        ("GET", [("Accept", HTML_ACCEPT), ("X-Requested-With", "XMLHttpRequest")]),
        ("POST", [("Accept", HTML_ACCEPT)]),
    ],
    ids=["accept-json", "xhr", "post"],
)
def test_not_allowed_api_calls_get_403_json(
    gw_allow: AllowDeployment, method: str, headers: list[tuple[str, str]]
) -> None:
    wechat = gw_allow.wechat
    before = len(gw_allow.upstream.seen)
    reply = send(
        gw_allow.port,
        "/team/items",
        [("Cookie", f"{COOKIE}={wechat.cookie('bob')}"), *headers],
        method=method,
        body=b"{}" if method == "POST" else b"",
    )
    assert reply.status == 403
    payload = reply.json()
    assert wechat.openid("bob") in payload["detail"]
    cleared = reply.set_cookie(COOKIE)
    assert cleared is not None
    assert cleared["max-age"] == "0"
    assert arrived(gw_allow.upstream, before) == []


def test_not_allowed_on_an_api_path_gets_403_json(gw_allow: AllowDeployment) -> None:
    reply = send(
        gw_allow.port,
        "/api/items",
        [("Cookie", f"{COOKIE}={gw_allow.wechat.cookie('bob')}"), ("Accept", HTML_ACCEPT)],
    )
    assert reply.status == 403
    assert gw_allow.wechat.openid("bob") in reply.json()["detail"]


def test_after_a_403_another_account_signs_in(gw_allow: AllowDeployment) -> None:
    wechat = gw_allow.wechat
    url = f"http://127.0.0.1:{gw_allow.port}"
    browser = RawBrowser()
    browser.set(COOKIE, wechat.cookie("bob"), "127.0.0.1")
    refused = browser.get(url + "/team/page?x=1")
    assert refused.status == 403
    assert browser.value_of(COOKIE) is None  # the refused session is gone
    callback = wechat.sign_in(browser, links(refused.text)["Sign in with another account"], "alice")
    assert callback.status == 302
    assert browser.value_of(COOKIE) is not None
    seen = browser.get(urlsplit(callback.location)._replace(path="/team/page").geturl()).echo()
    assert seen.value("X-WeChat-OpenID") == wechat.openid("alice")


def test_sign_out_from_the_403_page(gw_allow: AllowDeployment) -> None:
    browser = RawBrowser()
    browser.set(COOKIE, gw_allow.wechat.cookie("bob"), "127.0.0.1")
    refused = browser.get(f"http://127.0.0.1:{gw_allow.port}/team/page")
    signed_out = browser.get(links(refused.text)["Sign out"])
    assert signed_out.status == 200
    assert browser.value_of(COOKIE) is None


# --- API paths and preflights (allow_preflight: false) ---------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/api/items", True),
        ("/api/", True),
        ("/api", False),  # "/api/" covers what is below it, like a public prefix
        ("/api/items?page=2", True),
        ("/api/v1/deep/path", True),
        ("/apiary", False),
        ("/team/api/items", False),
        ("/x/../api/items", True),  # decided on the path the app will act on
    ],
)
def test_api_paths_get_401_json_even_for_browsers(
    gw_allow: AllowDeployment, path: str, api: bool
) -> None:
    before = len(gw_allow.upstream.seen)
    reply = send(gw_allow.port, path, [("Accept", HTML_ACCEPT)])
    assert arrived(gw_allow.upstream, before) == []
    if not api:
        assert reply.status == 302
        assert rd_of(reply.location) == path
        return
    assert reply.status == 401, (reply.status, reply.text[:300])
    payload = reply.json()
    assert urlsplit(payload["login_url"]).path == "/_gateway/login"
    assert reply.value("WWW-Authenticate")
    head = send(gw_allow.port, path, [("Accept", HTML_ACCEPT)], method="HEAD")
    assert head.status == 401


PREFLIGHT = [
    ("Origin", "https://spa.example.test"),
    ("Access-Control-Request-Method", "PUT"),
    ("Access-Control-Request-Headers", "content-type"),
]


def test_preflight_is_challenged_when_allow_preflight_is_false(gw_allow: AllowDeployment) -> None:
    before = len(gw_allow.upstream.seen)
    reply = send(gw_allow.port, "/team/items", PREFLIGHT, method="OPTIONS")
    assert reply.status == 401
    assert "login_url" in reply.json()
    assert arrived(gw_allow.upstream, before) == []


# =============================================================================================
# 2. Public paths: no spelling of a protected path passes for a public one
# =============================================================================================


@dataclass
class PublicDeployment:
    gateway: GatewayProcess
    wechat: WeChat
    upstream: RawUpstream

    @property
    def port(self) -> int:
        return self.gateway.port


@pytest.fixture(scope="module")
def gw_public(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[PublicDeployment]:
    with start_gateway(
        tmp_path_factory.mktemp("public"),
        wechat_app,
        raw.url,
        access={
            "public": ["/static/", "GET /pubget/", "~^/api/v1/public/"],
            "api_paths": ["/api/"],
        },
    ) as gateway:
        yield PublicDeployment(gateway, wechat_app, raw)


def resolved(target: str) -> str:
    """What the most liberal app could make of a forwarded path: every escape decoded (as
    often as it changes), ``\\`` as ``/``, ``;`` parameters dropped, dot segments resolved."""
    path = target.split("?", 1)[0].encode("latin-1")
    for _ in range(8):
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    text = path.decode("latin-1").replace("\\", "/")
    segments: list[str] = []
    for segment in text.split("/"):
        segment = segment.split(";", 1)[0]
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


#: (spelling, what the gateway may do with it without a session): "public" (forwarded),
#: "400" (refused as ambiguous or unreadable), "login" (302 to sign in).
ATTACKS = [
    ("/static/app.js", {"public"}),
    ("/static/../admin", {"400"}),
    ("/static/%2e%2e/admin", {"400"}),
    ("/static/%2E%2E/admin", {"400"}),
    ("/static/%2E%2E%2Fadmin", {"400"}),
    ("/static/%2e%2e%2fadmin", {"400"}),
    ("/static/..%2Fadmin", {"400"}),
    ("/static/.%2e/admin", {"400"}),
    ("/static/%2e./admin", {"400"}),
    ("/static/%2F..%2Fadmin", {"400"}),
    ("/static/..%5Cadmin", {"400"}),
    ("/static/..%5cadmin", {"400"}),
    ("/static/..\\admin", {"400"}),
    ("/static\\..\\admin", {"400", "login"}),
    ("/static/%252e%252e/admin", {"400"}),
    ("/static/%252e%252e%252fadmin", {"400"}),
    ("/static/%25252e%25252e/admin", {"400"}),
    ("/static/%2525252e%2525252e/admin", {"400"}),
    ("/static/%c0%ae%c0%ae/admin", {"400"}),
    ("/static/%c0%ae%c0%ae%c0%afadmin", {"400"}),
    ("/static/%e0%80%ae%e0%80%ae/admin", {"400"}),
    ("/static/%00/../admin", {"400"}),
    ("/static/x%00.js", {"400"}),
    ("/static/..%00/admin", {"400"}),
    ("//admin", {"login"}),
    ("///admin", {"login"}),
    ("//static/../admin", {"400", "login"}),
    ("/static//../admin", {"400"}),
    ("/static//..//admin", {"400"}),
    ("/static/./../admin", {"400"}),
    ("/static/x/../../admin", {"400"}),
    ("/static/x/..%2f..%2fadmin", {"400"}),
    ("/static/..", {"400"}),
    ("/static/%2e%2e", {"400"}),
    ("/static/x/../..", {"400"}),
    ("/static/.", {"public"}),
    ("/static/;/../admin", {"400"}),
    ("/static/..;/admin", {"400"}),
    ("/static/..;x=1/admin", {"400"}),
    ("/static;/../admin", {"400", "login"}),
    ("/static/;jsessionid=0123/../../admin", {"400"}),
    ("/static/app.js;jsessionid=0123", {"public"}),
    ("/admin;/static/x", {"400", "login"}),
    ("/admin;jsessionid=1/../static/x", {"400", "login"}),
    ("/admin/..;/static/x", {"400", "login"}),
    ("/admin%2F..%2Fstatic/x", {"400", "login"}),
    ("/admin/%2e%2e/static/x", {"400", "login"}),
    ("/STATIC/../admin", {"400", "login"}),
    ("/Static/x", {"login"}),
    ("/STATIC/x", {"login"}),
    ("/static%2Fx", {"400", "login"}),
    ("/static%2F..%2Fadmin", {"400", "login"}),
    ("/%73tatic/x", {"public", "400"}),
    ("/%73tatic/../admin", {"400", "login"}),
    ("/./static/x", {"public", "400"}),
    ("/./admin", {"login"}),
    ("/admin", {"login"}),
    ("/static", {"login"}),
    ("/staticadmin", {"login"}),
    ("/static/x?/../../admin", {"public"}),
    ("/static/x?q=%2e%2e/admin", {"public"}),
    ("http://127.0.0.1/static/../admin", {"400"}),
    ("/static/%09../admin", {"400"}),
    ("/static/..%0a/admin", {"400"}),
    ("/static/.%0d./admin", {"400"}),
    ("/static/%7f../admin", {"400"}),
    ("/static/read%20me.txt", {"public"}),
    ("/static/caf%C3%A9.png", {"public"}),
    # The gateway's own namespace, reached by a path that only resolves into it.
    ("/static/../_gateway/healthz", {"400"}),
    ("//_gateway/healthz", {"400"}),
    ("/static/%2e%2e/_gateway/userinfo", {"400"}),
]


@pytest.mark.parametrize(("spelling", "allowed"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_path_spellings_never_open_a_protected_path(
    gw_public: PublicDeployment, spelling: str, allowed: set[str]
) -> None:
    before = len(gw_public.upstream.seen)
    reply = send(gw_public.port, spelling, [("Accept", HTML_ACCEPT)])
    forwarded = arrived(gw_public.upstream, before)
    if reply.status == 200:
        outcome = "public"
        assert len(forwarded) == 1, forwarded
        target = forwarded[0].target
        # What was forwarded really is under /static/, however the app reads it.
        assert resolved(target).startswith("/static/") or resolved(target) == "/static", target
        assert "admin" not in resolved(target), target
        assert forwarded[0].value("X-WeChat-OpenID") is None
    else:
        outcome = {302: "login", 400: "400"}.get(reply.status, str(reply.status))
        assert forwarded == [], [seen.target for seen in forwarded]
    if outcome == "login":
        assert urlsplit(reply.location).path == "/_gateway/login"
    assert outcome in allowed, (spelling, reply.status, reply.text[:200])


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/pubget/a", True),
        ("HEAD", "/pubget/a", True),
        ("POST", "/pubget/a", False),
        ("PUT", "/static/upload", True),
        ("GET", "/api/v1/public/list", True),
        ("POST", "/api/v1/public/list", True),
        ("GET", "/api/v1/publicity", False),
        ("GET", "/api/v1/private", False),
        ("GET", "/x/api/v1/public/", False),
    ],
)
def test_public_rules_with_methods_and_regexes(
    gw_public: PublicDeployment, method: str, path: str, public: bool
) -> None:
    before = len(gw_public.upstream.seen)
    reply = send(gw_public.port, path, [("Accept", HTML_ACCEPT)], method=method)
    forwarded = arrived(gw_public.upstream, before)
    if public:
        assert reply.status == 200, (reply.status, reply.text[:200])
        assert [seen.target for seen in forwarded] == [path]
    else:
        # Not GET, or under api_paths: 401 JSON; else the login redirect.
        api = method != "GET" or path.startswith("/api/")
        assert reply.status == (401 if api else 302), reply.status
        assert forwarded == []


def _spoof_requests(port: int, path: str, cookie: str | None = None) -> Iterator[tuple[str, Reply]]:
    base = [("Accept", "application/json")]
    if cookie:
        base.append(("Cookie", f"{COOKIE}={cookie}"))
    for name, value in SPOOFS:
        yield name, send(port, path, [*base, (name, value)])
    yield "all at once", send(port, path, [*base, *SPOOFS])
    # Repeated lines of one name, in two spellings.
    yield "repeated", send(port, path, [*base, SPOOFS[0], SPOOFS[0], SPOOFS[4]])


def _wechat_headers(seen: Seen) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in seen.headers:
        if is_identity_header(name):
            found.setdefault(name, []).append(value)
    return found


def test_identity_headers_from_the_client_never_reach_public_paths(
    gw_public: PublicDeployment,
) -> None:
    for variant, reply in _spoof_requests(gw_public.port, "/static/app.js"):
        if reply.status == 400:
            continue  # a header the server refuses to read is not forwarded either
        seen = reply.echo()
        assert _wechat_headers(seen) == {}, (variant, seen.headers)
        assert b"spoof" not in seen.head, variant


def test_a_session_on_a_public_path_gets_its_identity_injected(
    gw_public: PublicDeployment,
) -> None:
    wechat = gw_public.wechat
    for variant, reply in _spoof_requests(gw_public.port, "/static/app.js", wechat.cookie("alice")):
        seen = reply.echo()
        assert _wechat_headers(seen) == {
            "X-WeChat-OpenID": [wechat.openid("alice")],
            "X-WeChat-AppID": [wechat.app.app_id],
            "X-WeChat-UnionID": [wechat.unionid("alice")],
            "X-WeChat-Nickname": ["Tester"],  # what session_cookie() seals
            "X-WeChat-Avatar": ["https://thirdwx.qlogo.cn/mmopen/vi_32/test/132"],
            "X-WeChat-Provider": ["wechat"],
        }, variant
        assert b"spoof" not in seen.head, variant
        assert COOKIE not in (seen.value("Cookie") or "")


def test_preflight_goes_to_the_app_without_login(gw_public: PublicDeployment) -> None:
    before = len(gw_public.upstream.seen)
    reply = send(
        gw_public.port,
        "/private/items",
        [*PREFLIGHT, ("X-WeChat-OpenID", "spoof")],
        method="OPTIONS",
    )
    seen = reply.echo()
    assert seen.method == "OPTIONS"
    assert seen.target == "/private/items"
    assert seen.value("Origin") == "https://spa.example.test"
    assert _wechat_headers(seen) == {}
    assert len(arrived(gw_public.upstream, before)) == 1
    # With a session, a preflight carries the identity like any request.
    alice = gw_public.wechat.cookie("alice")
    seen = send(
        gw_public.port,
        "/private/items",
        [*PREFLIGHT, ("Cookie", f"{COOKIE}={alice}")],
        method="OPTIONS",
    ).echo()
    assert seen.value("X-WeChat-OpenID") == gw_public.wechat.openid("alice")


def send_bytes(port: int, data: bytes) -> Reply:
    """``data`` written as it is on a fresh connection (it must ask for ``Connection:
    close``); the reply with its body as it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = (line.partition(":") for line in fields)
    headers = [(name.strip(), value.strip()) for name, _, value in parsed]
    return Reply(int(status_line.split(" ")[1]), headers, body)


def options(port: int, framing: str, body: bytes) -> bytes:
    """A preflight-shaped ``OPTIONS`` with ``framing`` (header lines) and ``body`` as given."""
    lines = [
        "OPTIONS /private/items HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in PREFLIGHT),
        "Content-Type: application/x-www-form-urlencoded",
        *framing.splitlines(),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        ("Content-Length: 21", b"transfer=all&to=mallo"),
        ("Content-Length: 1", b"x"),
        ("Transfer-Encoding: chunked", b"15\r\ntransfer=all&to=mallo\r\n0\r\n\r\n"),
        ("Transfer-Encoding: chunked", b"0\r\n\r\n"),
    ],
    ids=["length", "one-byte", "chunked", "chunked-empty"],
)
def test_an_options_with_a_body_is_no_preflight(
    gw_public: PublicDeployment, framing: str, body: bytes
) -> None:
    """A preflight has no body: one that carries a body (or chunked framing, even empty) is
    an ordinary OPTIONS, which without a session gets the API call's 401 and reaches no one."""
    before = len(gw_public.upstream.seen)
    reply = send_bytes(gw_public.port, options(gw_public.port, framing, body))
    assert reply.status == 401, (reply.status, reply.text[:300])
    assert urlsplit(reply.json()["login_url"]).path == "/_gateway/login"
    assert arrived(gw_public.upstream, before) == []


@pytest.mark.parametrize("framing", ["", "Content-Length: 0"], ids=["no-length", "length-0"])
def test_a_preflight_without_a_body_still_passes(gw_public: PublicDeployment, framing: str) -> None:
    before = len(gw_public.upstream.seen)
    seen = send_bytes(gw_public.port, options(gw_public.port, framing, b"")).echo()
    assert seen.method == "OPTIONS"
    assert seen.target == "/private/items"
    assert seen.body == b""
    assert len(arrived(gw_public.upstream, before)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "https://spa.example.test")],
        [("Access-Control-Request-Method", "PUT")],
        [],
    ],
    ids=["origin-only", "method-only", "bare"],
)
def test_options_that_is_not_a_preflight_needs_a_session(
    gw_public: PublicDeployment, headers: list[tuple[str, str]]
) -> None:
    before = len(gw_public.upstream.seen)
    reply = send(gw_public.port, "/private/items", headers, method="OPTIONS")
    assert reply.status == 401
    assert arrived(gw_public.upstream, before) == []


# =============================================================================================
# 3. Per-upstream rules, host routing, cookie_domain and redirect_domains
# =============================================================================================


@dataclass
class MultiDeployment:
    gateway: GatewayProcess
    wechat: WeChat
    default: RawUpstream
    one: RawUpstream
    two: RawUpstream
    app: RawUpstream

    @property
    def port(self) -> int:
        return self.gateway.port

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def get(self, path: str, user: str | None = "alice", **kwargs: Any) -> Reply:
        headers = [("Accept", HTML_ACCEPT), *kwargs.pop("headers", [])]
        if user is not None:
            headers.append(("Cookie", f"{COOKIE}={self.wechat.cookie(user)}"))
        return send(self.port, path, headers, host=kwargs.pop("host", None), **kwargs)


@pytest.fixture(scope="module")
def gw_multi(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[MultiDeployment]:
    one, two, app = RawUpstream(), RawUpstream(), RawUpstream()
    port = free_port()
    upstreams = [
        {"prefix": "/", "url": raw.url},
        {"prefix": "/a", "url": raw.url, "allow": [wechat_app.openid("alice")]},
        {"prefix": "/b", "url": raw.url, "allow": [wechat_app.unionid("bob")]},
        {"prefix": "/any", "url": raw.url, "allow": []},
        {"prefix": "/pub", "url": raw.url, "public": True},
        {"prefix": "/app", "url": raw.url, "strip_prefix": True},
        {"prefix": "/", "url": one.url, "host": "one.test"},
        {"prefix": "/", "url": two.url, "host": "two.test"},
        {"prefix": "/", "url": app.url, "host": f"app.example.test:{port}"},
        {"prefix": "/", "url": app.url, "host": "app2.example.test"},
    ]
    config = {
        "public_url": f"http://login.example.test:{port}",
        "upstreams": upstreams,
        "session": {"cookie_domain": ".example.test"},
        "redirect_domains": [".example.test:*"],
        "access": {"allow": [wechat_app.openid("alice"), wechat_app.openid("bob")]},
    }
    try:
        with start_gateway(
            tmp_path_factory.mktemp("multi"), wechat_app, raw.url, port, **config
        ) as gateway:
            yield MultiDeployment(gateway, wechat_app, raw, one, two, app)
    finally:
        for upstream in (one, two, app):
            upstream.close()


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("alice", "/a/page", 200),
        ("alice", "/b/page", 403),
        ("bob", "/a/page", 403),
        ("bob", "/b/page", 200),  # by unionid
        ("alice", "/", 200),
        ("bob", "/", 200),
        ("zhangsan", "/", 403),
        ("zhangsan", "/a/page", 403),
        ("zhangsan", "/any/page", 200),  # allow: [] is "any WeChat user", for this upstream
        (None, "/any/page", 302),
    ],
)
def test_upstream_allow_replaces_the_global_list(
    gw_multi: MultiDeployment, user: str | None, path: str, status: int
) -> None:
    before = len(gw_multi.default.seen)
    reply = gw_multi.get(path, user)
    assert reply.status == status, (reply.status, reply.text[:200])
    forwarded = arrived(gw_multi.default, before)
    assert [seen.target for seen in forwarded] == ([path] if status == 200 else [])
    if status == 403:  # zhangsan is refused by the global list, but /any lets anyone in
        assert reply.set_cookie(COOKIE) is None


def test_a_403_from_one_upstream_keeps_the_session_for_the_others(
    gw_multi: MultiDeployment,
) -> None:
    assert gw_multi.get("/b/page", "alice").status == 403
    assert gw_multi.get("/b/page", "alice").set_cookie(COOKIE) is None


def test_a_public_upstream_needs_no_login_and_strips_identity(gw_multi: MultiDeployment) -> None:
    seen = gw_multi.get("/pub/page?x=1", None, headers=[("X-WeChat-OpenID", "spoof")]).echo()
    assert seen.target == "/pub/page?x=1"
    assert _wechat_headers(seen) == {}
    seen = gw_multi.get("/pub/page", "zhangsan", headers=[("X_WeChat_OpenID", "spoof")]).echo()
    assert _wechat_headers(seen) == {}  # zhangsan is not allowed: public, anonymous
    seen = gw_multi.get("/pub/page", "alice", headers=[("x-wechat-openid", "spoof")]).echo()
    assert _wechat_headers(seen)["X-WeChat-OpenID"] == [gw_multi.wechat.openid("alice")]
    assert b"spoof" not in seen.head


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ("/app/x", "/x"),
        ("/app/x/y?q=1", "/x/y?q=1"),
        ("/app", "/"),
        ("/app/", "/"),
        ("/app?q=1&r=%2F", "/?q=1&r=%2F"),
        ("/app/a%2Fb?c=%2F", "/a%2Fb?c=%2F"),
        ("/app/%E5%BC%A0", "/%E5%BC%A0"),
        ("/apple", "/apple"),  # not under /app: the default upstream, unchanged
    ],
)
def test_strip_prefix(gw_multi: MultiDeployment, sent: str, received: str) -> None:
    before = len(gw_multi.default.seen)
    seen = gw_multi.get(sent).echo()
    assert seen.target == received
    assert [s.target for s in arrived(gw_multi.default, before)] == [received]


@pytest.mark.parametrize(
    ("host", "which"),
    [
        ("one.test", "one"),
        ("ONE.Test", "one"),
        ("one.test:{port}", "one"),
        ("two.test", "two"),
        ("two.test:{port}", "two"),
        ("app2.example.test", "app"),
        ("unknown.test", "default"),
        ("one.test.evil", "default"),
        ("xone.test", "default"),
        ("127.0.0.1:{port}", "default"),
        ("", "default"),  # no Host at all (HTTP/1.0 style)
    ],
)
def test_host_routing(gw_multi: MultiDeployment, host: str, which: str) -> None:
    upstreams = {
        "one": gw_multi.one,
        "two": gw_multi.two,
        "app": gw_multi.app,
        "default": gw_multi.default,
    }
    counts = {name: len(u.seen) for name, u in upstreams.items()}
    host = host.format(port=gw_multi.port)
    if host:
        reply = gw_multi.get("/routed/page", host=host)
    else:
        cookie = gw_multi.wechat.cookie("alice")
        lines = f"GET /routed/page HTTP/1.0\r\nCookie: {COOKIE}={cookie}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", gw_multi.port), timeout=10) as sock:
            sock.sendall(lines.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"), data[:200]
        reply = Reply(200, [], data.partition(b"\r\n\r\n")[2])
    seen = reply.echo()
    assert seen.target == "/routed/page"
    if host:
        assert seen.value("Host") == host  # passed through unchanged
    for name, upstream in upstreams.items():
        assert len(upstream.seen) - counts[name] == (1 if name == which else 0), name


def test_cookie_domain_shares_the_session_across_subdomains(gw_multi: MultiDeployment) -> None:
    wechat = gw_multi.wechat
    browser = RawBrowser()
    app_url = gw_multi.url("app.example.test", "/inbox?folder=1")
    challenge = browser.get(app_url)
    login_url = challenge.location
    assert login_url.startswith(gw_multi.url("login.example.test", "/_gateway/login?"))
    assert rd_of(login_url) == app_url
    callback = wechat.sign_in(browser, login_url, "alice")
    session = callback.set_cookie(COOKIE)
    assert session is not None
    assert session["domain"] == ".example.test"
    assert callback.location == app_url
    seen = browser.get(callback.location).echo()
    assert seen.target == "/inbox?folder=1"
    assert seen.value("X-WeChat-OpenID") == wechat.openid("alice")
    assert seen.value("Host") == f"app.example.test:{gw_multi.port}"
    # The same cookie works on the login host and any other subdomain.
    seen = browser.get(gw_multi.url("one.example.test", "/x")).echo()
    assert seen.value("X-WeChat-OpenID") == wechat.openid("alice")
    # Logging out clears the shared cookie (with its Domain, or the browser keeps it).
    logout = browser.get(gw_multi.url("login.example.test", "/_gateway/logout"))
    cleared = logout.set_cookie(COOKIE)
    assert cleared is not None
    assert cleared["domain"] == ".example.test"
    assert browser.value_of(COOKIE) is None
    assert browser.get(app_url).status == 302


def test_return_to_another_configured_host_after_login(gw_multi: MultiDeployment) -> None:
    browser = RawBrowser()
    target = gw_multi.url("app.example.test", "/deep/link?a=1&b=%2F")
    callback = gw_multi.wechat.sign_in(
        browser,
        gw_multi.url("login.example.test", "/_gateway/login?rd=") + quote(target, safe=""),
        "bob",
    )
    assert callback.location == target


def test_return_to_a_host_configured_without_port(gw_multi: MultiDeployment) -> None:
    reply = gw_multi.get("/deep", None, host=f"app2.example.test:{gw_multi.port}")
    assert rd_of(reply.location) == gw_multi.url("app2.example.test", "/deep")


HOSTILE_RD = [
    "http://app.example.test.evil.test:{port}/x",
    "http://evil.test:{port}/x",
    "http://evilexample.test:{port}/x",
    "http://app.example.test:{port}@evil.test/x",
    "http://evil.test\\@app.example.test:{port}/x",
    "http://evil.test%2F@app.example.test:{port}/x",
    "http://app.example.test%2eevil.test:{port}/x",
    "//evil.test/x",
    "/\\evil.test/x",
    "http://app.example.test:{port}//evil.test/x",
    "http://app.example.test:{port}/%2F%2Fevil.test",
    "http:/app.example.test:{port}/x",
    "HTTP://app.example.test:{port}/x",
    "javascript://app.example.test/%0aalert(1)",
    " http://evil.test/x",
    "http://app.example.test:{port}/x\t",
    "http://app。example.test:{port}/x",
    "http://[::1]:{port}/x",
]


@pytest.mark.parametrize("rd", HOSTILE_RD)
def test_hostile_absolute_targets_fall_back_to_home(gw_multi: MultiDeployment, rd: str) -> None:
    rd = rd.format(port=gw_multi.port)
    browser = RawBrowser()
    login = gw_multi.url("login.example.test", "/_gateway/login?rd=" + quote(rd, safe=""))
    callback = gw_multi.wechat.sign_in(browser, login, "alice")
    assert callback.location == gw_multi.url("login.example.test", "/")


def test_a_user_allowed_only_by_an_upstream_list_can_sign_in(gw_multi: MultiDeployment) -> None:
    browser = RawBrowser()
    challenge = browser.get(gw_multi.url("login.example.test", "/any/page"))
    callback = gw_multi.wechat.sign_in(browser, challenge.location, "zhangsan")
    assert callback.status == 302, (callback.status, callback.text[:300])
    seen = browser.get(callback.location).echo()
    assert seen.value("X-WeChat-OpenID") == gw_multi.wechat.openid("zhangsan")


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("bob", "/b/../a/secret"),
        ("bob", "/b/%2e%2e/a/secret"),
        (None, "/pub/../admin"),
        (None, "/pub/%2e%2e/admin"),
        ("zhangsan", "/any/../admin"),
    ],
)
def test_a_path_does_not_borrow_another_upstreams_rules(
    gw_multi: MultiDeployment, user: str | None, path: str
) -> None:
    before = len(gw_multi.default.seen)
    reply = gw_multi.get(path, user)
    assert reply.status in (302, 400, 403), reply.status
    assert arrived(gw_multi.default, before) == []
