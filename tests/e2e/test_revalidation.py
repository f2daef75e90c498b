"""``session.revalidate``: asking WeChat, now and then, whether a sign-in still stands.

The gateway runs with ``session.revalidate: 1s`` and two workers. One test waits for the
interval for real; the others make a session due at once by sealing it again with an
older ``validated_at`` (the test knows the secret), which is all the gateway looks at.
WeChat's answers are the simulator's: ``/_sim/revoke`` withdraws a user's authorization,
faults make it slow, broken or busy, ``/_sim/clock`` lets a refresh token expire. The
``Revalidator`` alone, in-process, is ``tests/unit/test_revalidator.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.auth.session import Session
from gateway.simulator import SimulatorServer
from tests.helpers.e2e import location, set_cookie
from tests.helpers.support import COOKIE
from tests.helpers.upstreams import EchoUpstream, echo_of
from tests.helpers.wechat_e2e import (
    CODEC,
    DESKTOP_UA,
    WECHAT_UA,
    Site,
    UABrowser,
    assert_nothing_secret,
    deploy,
    secrets_of,
)

pytestmark = pytest.mark.usefixtures("clean_simulator")

INTERVAL = 1
WECHAT_TIMEOUT = 1.0
SLACK = 0.6
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(
        tmp_path_factory,
        wechat,
        upstream,
        timeout=WECHAT_TIMEOUT,
        server={"workers": 2},
        session={"revalidate": f"{INTERVAL}s"},
    )


def signed_in(site: Site, user: str = "alice", user_agent: str = DESKTOP_UA) -> UABrowser:
    browser = site.browser(user_agent)
    callback = site.login(browser, user, "/app")
    assert location(callback) == site.url + "/app"
    site.clear_calls()
    return browser


def revalidation_calls(site: Site) -> list[tuple[str, Any]]:
    return [
        (call["endpoint"], call["outcome"])
        for call in site.calls()
        if call["endpoint"] in ("refresh_token", "auth")
    ]


def assert_cookie_cleared(response: requests.Response) -> None:
    cookie = set_cookie(response, COOKIE)
    assert cookie is not None, "the session cookie was not cleared"
    assert cookie.value == "" or cookie.attributes.get("max-age") == "0", cookie.raw


def assert_cookie_kept(response: requests.Response) -> None:
    cookie = set_cookie(response, COOKIE)
    assert cookie is None or (cookie.value and cookie.attributes.get("max-age") != "0"), cookie


# --- WeChat confirms ---------------------------------------------------------------------


def test_a_due_session_is_confirmed_and_reissued(gw: Site) -> None:
    # Times in the cookie are whole seconds: start early in one, so "not due yet" holds.
    time.sleep(max(0.0, 1.0 - time.time() % 1.0))
    browser = signed_in(gw)
    before = browser.session()
    assert before is not None
    assert before.refresh_token  # sealed in the cookie, for this
    assert before.validated_at == before.issued_at

    # Not due yet: no call to WeChat, no new cookie.
    early = browser.get(gw.url + "/app")
    assert echo_of(early).value("X-WeChat-OpenID") == before.openid
    assert set_cookie(early, COOKIE) is None
    assert revalidation_calls(gw) == []

    time.sleep(max(0.0, before.validated_at + INTERVAL + 0.05 - time.time()))
    due = browser.get(gw.url + "/app")
    assert echo_of(due).value("X-WeChat-OpenID") == before.openid
    cookie = set_cookie(due, COOKIE)
    assert cookie is not None
    after = CODEC.decode(cookie.value)
    assert after is not None
    assert after.validated_at is not None
    assert after.validated_at > before.validated_at
    # Revalidation confirms a sign-in; it does not make it last longer.
    assert after.expires_at == before.expires_at
    assert after.issued_at == before.issued_at
    assert 0 < int(cookie.attributes["max-age"]) <= before.expires_at - int(time.time()) + 1
    assert cookie.flag("httponly")
    assert revalidation_calls(gw) == [("refresh_token", 0), ("auth", 0)]
    refresh = gw.calls("refresh_token")[0]["params"]
    assert refresh["appid"] == gw.website.app_id

    # Confirmed just now: the next request is not due.
    again = browser.get(gw.url + "/app")
    assert set_cookie(again, COOKIE) is None
    assert len(revalidation_calls(gw)) == 2


def test_a_session_from_inside_wechat_is_checked_with_the_official_account(gw: Site) -> None:
    browser = signed_in(gw, "zhangsan", WECHAT_UA)
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/app")
    assert echo_of(reply).value("X-WeChat-AppID") == gw.official_account.app_id
    assert set_cookie(reply, COOKIE) is not None
    assert [c["params"]["appid"] for c in gw.calls("refresh_token")] == [gw.official_account.app_id]


# --- WeChat says the authorization is gone -----------------------------------------------


def test_revoked_authorization_sends_the_browser_to_log_in(gw: Site) -> None:
    browser = signed_in(gw, "bob")
    gw.revoke("bob")
    # Not due yet: the gateway does not know.
    assert echo_of(browser.get(gw.url + "/app")).value("X-WeChat-OpenID")
    browser.age_session(INTERVAL + 1)
    mark = gw.log_mark()
    reply = browser.get(gw.url + "/app?page=2")
    assert reply.status_code == 302, reply.text[:300]
    assert location(reply) == gw.url + "/_gateway/login?rd=%2Fapp%3Fpage%3D2"
    assert revalidation_calls(gw) == [("refresh_token", 42007)]
    log = gw.log_since(mark)
    assert "authorization ended" in log
    assert_nothing_secret(log, *secrets_of(gw))


def test_revoked_authorization_gives_an_api_call_401(gw: Site) -> None:
    browser = signed_in(gw, "bob")
    gw.revoke("bob")
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/api/items", headers=JSON)
    assert reply.status_code == 401
    assert reply.json()["login_url"].startswith(gw.url + "/_gateway/login")


def test_revoked_authorization_at_the_forward_auth_check(gw: Site) -> None:
    browser = signed_in(gw, "bob")
    gw.revoke("bob")
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/_gateway/auth")
    assert reply.status_code == 401
    assert_cookie_cleared(reply)


@pytest.mark.parametrize("headers", [{}, JSON], ids=["browser", "api"])
def test_revoked_authorization_clears_the_cookie(gw: Site, headers: dict[str, str]) -> None:
    browser = signed_in(gw, "bob")
    gw.revoke("bob")
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/app", headers=headers)
    assert reply.status_code in (302, 401)
    assert_cookie_cleared(reply)


def test_userinfo_after_revocation_is_401(gw: Site) -> None:
    browser = signed_in(gw, "bob")
    gw.revoke("bob")
    browser.age_session(INTERVAL + 1)
    assert browser.get(gw.url + "/_gateway/userinfo").status_code == 401


GONE = [
    ("refresh_token", 40030),
    ("refresh_token", 42002),
    ("refresh_token", 42007),
    ("auth", 40001),
    ("auth", 42001),
]


@pytest.mark.parametrize(("endpoint", "errcode"), GONE, ids=[f"{e}-{c}" for e, c in GONE])
def test_every_gone_answer_ends_the_session(gw: Site, endpoint: str, errcode: int) -> None:
    browser = signed_in(gw)
    browser.age_session(INTERVAL + 1)
    gw.fault(endpoint=endpoint, mode="errcode", errcode=errcode)
    reply = browser.get(gw.url + "/api/me", headers=JSON)
    assert reply.status_code == 401
    assert (endpoint, errcode) in revalidation_calls(gw)


def test_an_expired_refresh_token_ends_the_session(gw: Site) -> None:
    """WeChat's refresh tokens live 30 days: past that, WeChat answers 42002."""
    browser = signed_in(gw)
    browser.age_session(INTERVAL + 1)
    gw.advance_clock(31 * 86400)
    try:
        reply = browser.get(gw.url + "/api/me", headers=JSON)
    finally:
        gw.advance_clock(-31 * 86400)
    assert reply.status_code == 401
    assert revalidation_calls(gw) == [("refresh_token", 42002)]


def test_a_session_without_a_refresh_token_signs_in_again(gw: Site) -> None:
    """Cookies from before revalidation was turned on cannot be checked."""
    now = int(time.time())
    old = Session(
        openid="oOldSessionOpenID0000000000",
        app_id=gw.website.app_id,
        unionid=None,
        nickname="Old",
        avatar="",
        issued_at=now - 100,
        expires_at=now + 3600,
    )
    browser = gw.browser()
    browser.jar[(COOKIE, "/")] = CODEC.encode(old)
    reply = browser.get(gw.url + "/api/me", headers=JSON)
    assert reply.status_code == 401
    assert revalidation_calls(gw) == []


# --- WeChat cannot be asked --------------------------------------------------------------

DOWN = [
    {"endpoint": "refresh_token", "mode": "delay", "delay": WECHAT_TIMEOUT + 0.5},
    {"endpoint": "refresh_token", "mode": "http_status", "status": 500},
    {"endpoint": "refresh_token", "mode": "reset"},
    {"endpoint": "refresh_token", "mode": "garbage"},
    {"endpoint": "refresh_token", "mode": "errcode", "errcode": -1, "times": 50},
    {"endpoint": "refresh_token", "mode": "errcode", "errcode": 45011, "times": 50},
    {"endpoint": "auth", "mode": "delay", "delay": WECHAT_TIMEOUT + 0.5},
    {"endpoint": "auth", "mode": "reset"},
]


@pytest.mark.parametrize(
    "fault", DOWN, ids=[f"{f['endpoint']}-{f.get('errcode', f['mode'])}" for f in DOWN]
)
def test_when_wechat_is_down_the_session_keeps_working(
    gw: Site, fault: dict[str, Any], wait_out_the_pause: None
) -> None:
    browser = signed_in(gw)
    aged = browser.age_session(INTERVAL + 1)
    gw.fault(**fault)
    mark = gw.log_mark()
    started = time.monotonic()
    reply = browser.get(gw.url + "/app")
    elapsed = time.monotonic() - started
    assert echo_of(reply).value("X-WeChat-OpenID") == aged.openid
    assert_cookie_kept(reply)
    assert browser.session() == aged  # nothing new to write
    assert elapsed < WECHAT_TIMEOUT + SLACK, elapsed
    log = gw.log_since(mark)
    # One warning, with the cause; one line saying what became of the session.
    warnings = [line for line in log.splitlines() if "[WARNING]" in line]
    assert len(warnings) == 1, log
    assert f"gateway.wechat: WeChat {fault['endpoint']} call failed" in warnings[0]
    kept = [line for line in log.splitlines() if "session kept until max_age" in line]
    assert len(kept) == 1, log
    assert "gateway.revalidation" in kept[0]
    assert_nothing_secret(log, *secrets_of(gw))


@pytest.fixture
def wait_out_the_pause() -> Iterator[None]:
    """After WeChat was unreachable a worker does not ask again for a while (the interval)."""
    yield
    time.sleep(INTERVAL)


def test_an_outage_costs_one_timeout_not_one_per_request(
    gw: Site, wait_out_the_pause: None
) -> None:
    browser = signed_in(gw)
    browser.age_session(INTERVAL + 1)
    gw.fault(endpoint="refresh_token", mode="delay", delay=WECHAT_TIMEOUT + 0.5, times=50)
    slow = []
    for _ in range(6):  # on both workers, whichever takes each request
        started = time.monotonic()
        assert browser.get(gw.url + "/app").status_code == 200
        if time.monotonic() - started > WECHAT_TIMEOUT / 2:
            slow.append(time.monotonic() - started)
    assert len(slow) <= 2, slow
    assert len(gw.calls("refresh_token")) <= 2


def test_after_an_outage_the_next_check_goes_through(gw: Site) -> None:
    browser = signed_in(gw)
    aged = browser.age_session(INTERVAL + 1)
    gw.fault(endpoint="refresh_token", mode="reset", times=50)
    assert browser.get(gw.url + "/app").status_code == 200
    gw.clear_faults()
    time.sleep(INTERVAL)  # the pause after a failure
    reply = browser.get(gw.url + "/app")
    assert reply.status_code == 200
    cookie = set_cookie(reply, COOKIE)
    # Either worker: one that saw the outage has waited it out, the other never saw it.
    assert cookie is not None
    fresh = CODEC.decode(cookie.value)
    assert fresh is not None
    assert fresh.validated_at is not None
    assert aged.validated_at is not None
    assert fresh.validated_at > aged.validated_at


# --- a burst of requests at the moment of revalidation ------------------------------------


@pytest.mark.parametrize("slow_wechat", [False, True], ids=["fast", "slow"])
def test_parallel_requests_at_the_moment_of_revalidation(gw: Site, slow_wechat: bool) -> None:
    browser = signed_in(gw, "zhangsan")
    aged = browser.age_session(INTERVAL + 1)
    cookie = browser.cookie_header("/")
    if slow_wechat:  # the first check is still in flight when the others arrive
        gw.fault(endpoint="refresh_token", mode="delay", delay=0.5)
    count = 20
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(index: int) -> None:
        with requests.Session() as http:  # a connection of its own, any worker
            http.trust_env = False
            barrier.wait()
            try:
                results[index] = http.get(
                    f"{gw.url}/app/{index}",
                    headers={"Cookie": cookie, "User-Agent": DESKTOP_UA},
                    allow_redirects=False,
                    timeout=15,
                )
            except Exception as exc:
                results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    for index, reply in enumerate(results):
        assert isinstance(reply, requests.Response), reply
        assert reply.status_code == 200, (index, reply.status_code, reply.text[:200])
        assert echo_of(reply).value("X-WeChat-OpenID") == aged.openid
        assert_cookie_kept(reply)
    refreshes = gw.calls("refresh_token")
    # One check per worker at most, not one per request.
    assert 1 <= len(refreshes) <= 2, len(refreshes)
    assert all(call["outcome"] == 0 for call in refreshes)
    # The browser keeps whichever cookie it got last: every one is a confirmed session.
    for reply in results:
        issued = set_cookie(reply, COOKIE)
        if issued is not None:
            fresh = CODEC.decode(issued.value)
            assert fresh is not None
            assert fresh.openid == aged.openid
