"""WeChat's in-app browser sometimes opens the login callback twice with the same code.

The code is single-use, so a naive gateway answers the second request with an error page,
and the browser shows whichever answer came last. The gateway makes the two requests meet
(``gateway.ledger``): the first exchanges the code, the second answers with the first one's
redirect and session cookie, without calling WeChat again. Only a browser that carries the
same pending login gets that answer; anyone else still gets 400.

The gateway runs with two workers and WeChat's code exchange is made slow, so that two
concurrent callbacks are both in flight, on whichever workers accept them.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.login.ledger import CallbackLedger, Outcome
from gateway.simulator import SimulatorServer
from gateway.state.sqlite import SqliteStore
from tests.helpers.e2e import assert_no_session_set, code_of, location, set_cookie, state_of
from tests.helpers.support import COOKIE
from tests.helpers.upstreams import EchoUpstream, echo_of
from tests.helpers.wechat_e2e import (
    CODEC,
    WECHAT_UA,
    Site,
    UABrowser,
    assert_nothing_secret,
    deploy,
    secrets_of,
)

pytestmark = pytest.mark.usefixtures("clean_simulator")

WECHAT_TIMEOUT = 3.0
SLOW_EXCHANGE = 1.0
_PID = re.compile(r"\[(\d+)\] \[INFO\] gateway\.(?:login|audit): (signed in|answered a duplicate)")


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(
        tmp_path_factory, wechat, upstream, timeout=WECHAT_TIMEOUT, server={"workers": 2}
    )


def twin(site: Site, browser: UABrowser) -> UABrowser:
    """A second connection that sends exactly the cookies ``browser`` has now: what the
    in-app browser sends when it opens the callback again before the first answer lands."""
    other = site.browser(browser.user_agent)
    other.jar = dict(browser.jar)
    return other


def in_parallel(*calls: tuple[UABrowser, str]) -> list[requests.Response]:
    """GET each (browser, url) from its own thread at the same moment."""
    results: list[requests.Response | BaseException | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int, browser: UABrowser, url: str) -> None:
        barrier.wait()
        try:
            results[index] = browser.get(url)
        except BaseException as exc:  # reported below, in the test's thread
            results[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, browser, url))
        for i, (browser, url) in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    responses = []
    for result in results:
        assert isinstance(result, requests.Response), result
        responses.append(result)
    return responses


def assert_signed_in(site: Site, response: requests.Response, target: str, openid: str) -> None:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    assert location(response) == site.url + target
    cookie = set_cookie(response, COOKIE)
    assert cookie is not None
    assert cookie.value
    session = CODEC.decode(cookie.value)
    assert session is not None
    assert session.openid == openid


# --- the duplicate is answered like the first ------------------------------------------


def test_duplicate_within_a_second_lands_on_the_target(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser, "/dup/seq?a=1"))
    again = twin(gw, browser)
    openid = gw.users()["alice"]["openids"][gw.official_account.app_id]

    first = browser.get(callback_url)
    second = again.get(callback_url)
    assert_signed_in(gw, first, "/dup/seq?a=1", openid)
    assert_signed_in(gw, second, "/dup/seq?a=1", openid)
    assert len(gw.calls("access_token")) == 1
    # The browser that saw only the second answer is signed in.
    assert echo_of(again.get(gw.url + "/dup/seq?a=1")).value("X-WeChat-OpenID") == openid


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_duplicates_both_land_on_the_target(gw: Site, round_: int) -> None:
    browser = gw.browser(WECHAT_UA)
    target = f"/dup/concurrent/{round_}"
    callback_url = gw.authorize(gw.begin(browser, target), "zhangsan")
    again = twin(gw, browser)
    openid = gw.users()["zhangsan"]["openids"][gw.official_account.app_id]
    gw.fault(endpoint="access_token", mode="delay", delay=SLOW_EXCHANGE)
    mark = gw.log_mark()

    started = time.monotonic()
    first, second = in_parallel((browser, callback_url), (again, callback_url))
    elapsed = time.monotonic() - started

    assert_signed_in(gw, first, target, openid)
    assert_signed_in(gw, second, target, openid)
    assert len(gw.calls("access_token")) == 1
    # The duplicate waited for the first answer, not for a timeout.
    assert elapsed < SLOW_EXCHANGE + 1.0, elapsed
    for each in (browser, again):
        assert echo_of(each.get(gw.url + target)).value("X-WeChat-OpenID") == openid
    log = gw.log_since(mark)
    assert sorted(kind for _, kind in _PID.findall(log)) == ["answered a duplicate", "signed in"]
    assert_nothing_secret(log, code_of(callback_url), state_of(callback_url), *secrets_of(gw))


def test_a_duplicate_from_another_browser_is_refused(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser, "/dup/other"))
    stranger = gw.browser(WECHAT_UA)  # no cookies at all
    gw.fault(endpoint="access_token", mode="delay", delay=SLOW_EXCHANGE)

    first, foreign = in_parallel((browser, callback_url), (stranger, callback_url))
    assert location(first) == gw.url + "/dup/other"
    assert foreign.status_code == 400
    assert_no_session_set(foreign)
    assert stranger.session_value() is None
    assert_nothing_secret(foreign.text, code_of(callback_url), *secrets_of(gw))

    # And after the fact, too.
    late = gw.browser(WECHAT_UA).get(callback_url)
    assert late.status_code == 400
    assert_no_session_set(late)
    assert len(gw.calls("access_token")) == 1


def test_a_duplicate_of_a_failed_first_attempt_is_not_a_session(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser, "/dup/failed"))
    again = twin(gw, browser)
    gw.fault(endpoint="access_token", mode="delay", delay=SLOW_EXCHANGE)
    gw.fault(endpoint="userinfo", mode="errcode", errcode=40001)

    first, second = in_parallel((browser, callback_url), (again, callback_url))
    for response in (first, second):
        assert response.status_code == 502, (response.status_code, response.text[:300])
        assert_no_session_set(response)
    assert browser.session_value() is None
    assert again.session_value() is None
    assert len(gw.calls("access_token")) == 1


def test_a_sequential_duplicate_of_a_failed_first_attempt_is_not_a_session(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser, "/dup/failed-seq"))
    again = twin(gw, browser)
    gw.fault(endpoint="access_token", mode="errcode", errcode=40029)

    first = browser.get(callback_url)
    assert first.status_code == 502
    second = again.get(callback_url)
    assert second.status_code >= 400, second.status_code
    assert_no_session_set(second)
    assert again.session_value() is None
    # Reloading the error page is no way in either.
    reload = browser.get(callback_url)
    assert reload.status_code >= 400
    assert_no_session_set(reload)
    assert len(gw.calls("access_token")) == 1


# --- the ledger itself -------------------------------------------------------------------


def _wait_in_child(database: str, code: str, state: str, queue: Any) -> None:
    ledger = CallbackLedger(SqliteStore(database, session_max_age=3600))
    queue.put((ledger.claim(code), ledger.wait(code, state, 5.0)))


def test_the_ledger_meets_across_processes(tmp_path: Path) -> None:
    """Workers are processes: the second request may well be in another one."""
    database = str(tmp_path / "state.db")
    ledger = CallbackLedger(SqliteStore(database, session_max_age=3600))
    assert ledger.claim("the-code")
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_wait_in_child, args=(database, "the-code", "STATE1", queue))
    child.start()
    time.sleep(0.2)
    ledger.record("the-code", "STATE1", Outcome(ok=True, target="/t", set_cookie="c=v"))
    claimed, outcome = queue.get(timeout=10)
    child.join(10)
    assert claimed is False
    assert outcome == Outcome(ok=True, target="/t", set_cookie="c=v")
