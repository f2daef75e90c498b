"""Every WeChat errcode a sign-in can meet, and what the user and the operator get.

Each errcode of the protocol reference's table is injected into the simulator at the call
where it belongs (code exchange or profile) and the callback's page is checked: its status
by class (configuration errors 502 saying the sign-in is misconfigured, busy and quota 503
with ``Retry-After`` and when to try again, the rest 502), its language (Chinese for
``Accept-Language: zh-CN`` or ``?lang=zh``, English otherwise), a link to try again, and
nothing secret on it. The gateway's log gets one WARNING line per failure naming the
errcode, its meaning and a hint, and never a secret, code, state or token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from gateway.simulator import SimulatorServer
from tests.helpers.e2e import assert_no_session_set, code_of, location, state_of
from tests.helpers.support import links
from tests.helpers.upstreams import EchoUpstream
from tests.helpers.wechat_e2e import (
    DESKTOP_UA,
    WECHAT_UA,
    Site,
    UABrowser,
    assert_nothing_secret,
    deploy,
    secrets_of,
)

pytestmark = pytest.mark.usefixtures("clean_simulator")

WECHAT_TIMEOUT = 1.0
SLACK = 0.6
_WARNING = re.compile(r"^.*\[WARNING\].*$", re.MULTILINE)
_ERRCODE_LINE = re.compile(
    r"\[WARNING\] gateway\.wechat: WeChat (?P<endpoint>\w+) call failed: errcode (?P<errcode>-?\d+)"
    r" \((?P<meaning>[^)]+)\); (?P<hint>.+?) \(errmsg '.*', rid [^)]+\)( request_id=\S+)?$"
)


@dataclass(frozen=True)
class Expected:
    """What a class of failure looks like to the user."""

    status: int
    en: str  # words the English page says
    zh: str  # words the Chinese page says


CONFIG = Expected(502, "misconfigured", "登录配置有误")
FAILED = Expected(502, "WeChat sign-in failed", "微信登录失败")
BUSY = Expected(503, "WeChat is busy", "微信繁忙")
TIMED_OUT = Expected(504, "WeChat did not answer", "微信没有响应")
UNREACHABLE = Expected(502, "Cannot reach WeChat", "无法连接微信")

# (errcode, the call it is injected at, the page it becomes): the reference table, row by
# row, plus one errcode nobody knows.
ERRCODES: list[tuple[int, str, Expected]] = [
    (-1, "access_token", BUSY),
    (-1, "userinfo", BUSY),
    (45011, "access_token", BUSY),
    (45011, "userinfo", BUSY),
    (40029, "access_token", FAILED),
    (40163, "access_token", FAILED),
    (42003, "access_token", FAILED),
    (40030, "access_token", FAILED),
    (42002, "access_token", FAILED),
    (42007, "access_token", FAILED),
    (40001, "userinfo", FAILED),
    (40014, "userinfo", FAILED),
    (42001, "userinfo", FAILED),
    (40003, "userinfo", FAILED),
    (41009, "userinfo", FAILED),
    (40013, "access_token", CONFIG),
    (40125, "access_token", CONFIG),
    (41002, "access_token", CONFIG),
    (41004, "access_token", CONFIG),
    (48001, "userinfo", CONFIG),
    (50001, "userinfo", CONFIG),
    (99999, "access_token", FAILED),
]
# What the log line's hint says for the errcodes an operator fixes in the config file.
CONFIG_HINTS = {
    40013: "wechat.app_id is wrong",
    40125: "wechat.app_secret is wrong",
    41002: "wechat.app_id is empty",
    41004: "wechat.app_secret is empty",
}
LANGS = {
    "default": ({}, ""),
    "en": ({"Accept-Language": "en-US,en;q=0.9"}, ""),
    "zh-header": ({"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}, ""),
    "zh-query": ({"Accept-Language": "en-US,en;q=0.9"}, "&lang=zh"),
}


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(tmp_path_factory, wechat, upstream, timeout=WECHAT_TIMEOUT)


@dataclass
class Failure:
    page: requests.Response
    elapsed: float
    log: str
    callback_url: str
    browser: UABrowser


def fail_login(
    site: Site,
    fault: dict[str, object],
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    user_agent: str = DESKTOP_UA,
) -> Failure:
    browser = site.browser(user_agent)
    callback_url = site.authorize(site.begin(browser, "/page?x=1"))
    site.fault(**fault)
    mark = site.log_mark()
    started = time.monotonic()
    page = browser.get(callback_url + query, headers=headers or {})
    elapsed = time.monotonic() - started
    return Failure(page, elapsed, site.log_since(mark), callback_url, browser)


def warnings(log: str) -> list[str]:
    return _WARNING.findall(log)


def assert_page(site: Site, failure: Failure, expected: Expected, lang: str) -> None:
    page = failure.page
    assert page.status_code == expected.status, (page.status_code, page.text[:500])
    assert page.headers["Content-Type"].startswith("text/html")
    assert failure.elapsed < WECHAT_TIMEOUT + SLACK, failure.elapsed
    assert_no_session_set(page)
    assert failure.browser.session_value() is None
    if lang == "zh":
        assert expected.zh in page.text
        assert 'lang="zh' in page.text
        retry = links(page.text)["重试"]
    else:
        assert expected.en in page.text
        assert 'lang="en"' in page.text
        retry = links(page.text)["Try again"]
    assert retry.startswith(site.url + "/_gateway/login?rd="), retry
    if expected is BUSY:
        retry_after = page.headers.get("Retry-After", "")
        assert retry_after.isdigit(), page.headers
        assert 1 <= int(retry_after) <= 60
        if lang == "zh":
            assert f"请约 {retry_after} 秒后重试" in page.text
        else:
            assert f"Try again in about {retry_after} seconds" in page.text
    else:
        assert "Retry-After" not in page.headers
    secrets = (code_of(failure.callback_url), state_of(failure.callback_url), *secrets_of(site))
    assert_nothing_secret(page.text, *secrets)
    assert_nothing_secret(failure.log, *secrets)


def the_errcode_line(log: str, errcode: int) -> re.Match[str]:
    """The one WARNING line that tells the operator about ``errcode``."""
    lines = [line for line in warnings(log) if f"errcode {errcode} " in line]
    assert len(lines) == 1, lines
    found = _ERRCODE_LINE.search(lines[0])
    assert found is not None, lines[0]
    assert found["errcode"] == str(errcode)
    return found


# --- every errcode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errcode", "endpoint", "expected"),
    ERRCODES,
    ids=[f"{endpoint}-{errcode}" for errcode, endpoint, _ in ERRCODES],
)
def test_errcode_page_and_log_line(
    gw: Site, errcode: int, endpoint: str, expected: Expected
) -> None:
    failure = fail_login(
        gw,
        {"endpoint": endpoint, "mode": "errcode", "errcode": errcode, "times": 50},
        headers=LANGS["default"][0],
    )
    assert_page(gw, failure, expected, "en")
    line = the_errcode_line(failure.log, errcode)
    assert line["meaning"] != "unknown error" or errcode == 99999
    assert line["hint"]
    assert line["endpoint"] == endpoint
    if errcode in CONFIG_HINTS:
        assert line["hint"] == CONFIG_HINTS[errcode]


# One errcode of each class, in each way of choosing a language.
_CLASSES = [(40125, "access_token"), (48001, "userinfo"), (40163, "access_token"), (-1, "userinfo")]


@pytest.mark.parametrize("lang", ["en", "zh-header", "zh-query"])
@pytest.mark.parametrize(("errcode", "endpoint"), _CLASSES, ids=[str(e) for e, _ in _CLASSES])
def test_the_page_speaks_the_users_language(
    gw: Site, errcode: int, endpoint: str, lang: str
) -> None:
    headers, query = LANGS[lang]
    failure = fail_login(
        gw,
        {"endpoint": endpoint, "mode": "errcode", "errcode": errcode, "times": 50},
        headers=headers,
        query=query,
    )
    expected = next(e for code, _, e in ERRCODES if code == errcode)
    assert_page(gw, failure, expected, "zh" if lang.startswith("zh") else "en")


# --- transport failures -------------------------------------------------------------------

TRANSPORT = [
    ({"endpoint": "access_token", "mode": "delay", "delay": WECHAT_TIMEOUT + 1}, TIMED_OUT),
    ({"endpoint": "userinfo", "mode": "delay", "delay": WECHAT_TIMEOUT + 1}, TIMED_OUT),
    ({"endpoint": "access_token", "mode": "reset"}, UNREACHABLE),
    ({"endpoint": "userinfo", "mode": "http_status", "status": 500}, FAILED),
    ({"endpoint": "access_token", "mode": "garbage"}, FAILED),
]


@pytest.mark.parametrize("lang", ["en", "zh-header"])
@pytest.mark.parametrize(
    ("fault", "expected"),
    TRANSPORT,
    ids=[f"{f['endpoint']}-{f['mode']}" for f, _ in TRANSPORT],
)
def test_transport_failure_pages(
    gw: Site, fault: dict[str, object], expected: Expected, lang: str
) -> None:
    headers, query = LANGS[lang]
    failure = fail_login(gw, fault, headers=headers, query=query)
    assert_page(gw, failure, expected, "zh" if lang.startswith("zh") else "en")
    client_lines = [line for line in warnings(failure.log) if "gateway.wechat:" in line]
    assert len(client_lines) == 1, client_lines
    assert f"WeChat {fault['endpoint']} call failed" in client_lines[0]


# --- what the operator reads --------------------------------------------------------------


def test_wrong_secret_of_the_official_account_names_its_key(gw: Site) -> None:
    failure = fail_login(
        gw,
        {"endpoint": "access_token", "mode": "errcode", "errcode": 40125},
        user_agent=WECHAT_UA,
    )
    assert_page(gw, failure, CONFIG, "en")
    line = the_errcode_line(failure.log, 40125)
    assert line["meaning"] == "invalid app secret"
    assert line["hint"] == "wechat.official_account.app_secret is wrong"


@pytest.mark.parametrize(
    ("user_agent", "key"),
    [(WECHAT_UA, "wechat.official_account.scope"), (DESKTOP_UA, "wechat.app_id")],
    ids=["official-account", "website"],
)
def test_scope_errors_name_something_that_exists(gw: Site, user_agent: str, key: str) -> None:
    """The hint points at a real config key: the website app has no ``scope`` setting."""
    failure = fail_login(
        gw, {"endpoint": "userinfo", "mode": "errcode", "errcode": 48001}, user_agent=user_agent
    )
    hint = the_errcode_line(failure.log, 48001)["hint"]
    assert key in hint
    assert "wechat.scope" not in hint


def test_one_warning_line_per_failed_sign_in(gw: Site) -> None:
    failure = fail_login(gw, {"endpoint": "access_token", "mode": "errcode", "errcode": 40125})
    assert failure.page.status_code == 502
    assert len(warnings(failure.log)) == 1, warnings(failure.log)


# --- busy: retried inside the budget; quota: told when to come back --------------------------


@pytest.mark.parametrize("endpoint", ["access_token", "userinfo"])
@pytest.mark.parametrize("errcode", [-1])
def test_busy_is_retried_then_sign_in(gw: Site, errcode: int, endpoint: str) -> None:
    browser = gw.browser()
    callback_url = gw.authorize(gw.begin(browser, "/retried"))
    gw.fault(endpoint=endpoint, mode="errcode", errcode=errcode, times=2)
    mark = gw.log_mark()
    started = time.monotonic()
    callback = browser.get(callback_url)
    elapsed = time.monotonic() - started
    assert location(callback) == gw.url + "/retried"
    assert browser.session_value()
    assert elapsed < WECHAT_TIMEOUT + SLACK, elapsed
    assert elapsed >= 0.2 + 0.4  # it did back off
    assert [c["outcome"] for c in gw.calls(endpoint)] == [errcode, errcode, 0]
    assert len(gw.calls("access_token")) == (3 if endpoint == "access_token" else 1)
    log = gw.log_since(mark)
    # A sign-in that succeeded needs no operator: the retries are noted, not warned about.
    assert warnings(log) == []
    assert "retrying in" in log
    assert_nothing_secret(log, code_of(callback_url), *secrets_of(gw))


def test_the_minute_quota_says_when_to_retry(gw: Site) -> None:
    failure = fail_login(
        gw, {"endpoint": "access_token", "mode": "errcode", "errcode": 45011, "times": 50}
    )
    assert_page(gw, failure, BUSY, "en")
    # Asked once: the quota is spent until the next minute, a retry would spend more.
    assert [c["outcome"] for c in gw.calls("access_token")] == [45011]


@pytest.mark.parametrize(("errcode", "endpoint"), [(40029, "access_token"), (45011, "userinfo")])
def test_the_chinese_page_has_no_english_sentence(gw: Site, errcode: int, endpoint: str) -> None:
    failure = fail_login(
        gw,
        {"endpoint": endpoint, "mode": "errcode", "errcode": errcode, "times": 50},
        headers=LANGS["zh-header"][0],
    )
    detail = re.search(r'<p class="detail">(.*?)</p>', failure.page.text, re.DOTALL)
    assert detail is None or not re.search(r"[A-Za-z]{3,} [A-Za-z]{3,}", detail.group(1))
