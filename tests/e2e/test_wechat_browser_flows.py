"""Both ways of signing in, chosen by the browser: QR login on a desktop, the Official
Account inside WeChat's own browser (User-Agent ``MicroMessenger``).

Three gateways share one simulated WeChat and one echo app:

- ``gw``: an Official Account with ``snsapi_userinfo`` next to the website app;
- ``gw_base``: the Official Account with ``snsapi_base`` (silent, openid only);
- ``gw_plain``: no Official Account, ``wechat.fetch_profile: false``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

from gateway.simulator import SimulatorServer
from tests.helpers.e2e import assert_no_session_set, location, set_cookie
from tests.helpers.support import COOKIE, links
from tests.helpers.upstreams import EchoUpstream, echo_of
from tests.helpers.wechat_e2e import (
    DESKTOP_UA,
    WECHAT_UA,
    Site,
    assert_nothing_secret,
    deploy,
    secrets_of,
)

pytestmark = pytest.mark.usefixtures("clean_simulator")

_STATE = re.compile(r"[A-Za-z0-9]{1,128}")
_OA_ORDER = ["appid", "redirect_uri", "response_type", "scope", "state"]


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(tmp_path_factory, wechat, upstream, oa_scope="snsapi_userinfo")


@pytest.fixture(scope="module")
def gw_base(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(tmp_path_factory, wechat, upstream, oa_scope="snsapi_base")


@pytest.fixture(scope="module")
def gw_plain(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(
        tmp_path_factory, wechat, upstream, oa_scope=None, wechat={"fetch_profile": False}
    )


def _query_pairs(url: str) -> list[tuple[str, str]]:
    query = urlsplit(url.split("#", 1)[0]).query
    return [(name, value) for name, _, value in (p.partition("=") for p in query.split("&"))]


# --- which flow --------------------------------------------------------------------------


def test_desktop_browser_gets_qr_login(gw: Site) -> None:
    authorize = gw.begin(gw.browser(DESKTOP_UA), "/desk")
    assert authorize.startswith(gw.wechat.url + "/connect/qrconnect?"), authorize
    assert dict(_query_pairs(authorize))["appid"] == gw.website.app_id


@pytest.mark.parametrize(
    "user_agent",
    [
        WECHAT_UA,
        # Android WeChat, and WeChat's desktop client: both carry MicroMessenger.
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 "
        "MMWEBSDK/20231202 MMWEBID/2247 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64",
        "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) "
        "WindowsWechat(0x6309092b)",
    ],
    ids=["ios", "android", "windows"],
)
def test_wechat_browser_gets_the_official_account_authorize_url(gw: Site, user_agent: str) -> None:
    browser = gw.browser(user_agent)
    authorize = gw.begin(browser, "/in-wechat")
    base, hash_mark, fragment = authorize.partition("#")
    assert base.startswith(gw.wechat.url + "/connect/oauth2/authorize?"), authorize
    assert (hash_mark, fragment) == ("#", "wechat_redirect")
    pairs = _query_pairs(authorize)
    # WeChat checks this order strictly; nothing else is sent.
    assert [name for name, _ in pairs] == _OA_ORDER
    raw = dict(pairs)
    assert raw["appid"] == gw.official_account.app_id
    assert raw["redirect_uri"] == quote(gw.url + "/_gateway/callback", safe="")
    assert raw["response_type"] == "code"
    assert raw["scope"] == "snsapi_userinfo"
    assert _STATE.fullmatch(raw["state"]), raw["state"]


def test_wechat_browser_without_an_official_account_gets_qr_login(gw_plain: Site) -> None:
    authorize = gw_plain.begin(gw_plain.browser(WECHAT_UA))
    assert authorize.startswith(gw_plain.wechat.url + "/connect/qrconnect?"), authorize


# --- the Official Account flow ------------------------------------------------------------


def test_login_inside_wechat_carries_the_official_accounts_identity(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    mark = gw.log_mark()
    callback = gw.login(browser, "zhangsan", "/oa/page?x=1")
    assert location(callback) == gw.url + "/oa/page?x=1"
    assert set_cookie(callback, COOKIE) is not None

    oa = gw.official_account.app_id
    user = gw.users()["zhangsan"]
    echo = echo_of(browser.get(gw.url + "/oa/page?x=1"))
    assert echo.wechat_headers() == {
        "X-WeChat-OpenID": user["openids"][oa],
        "X-WeChat-AppID": oa,
        "X-WeChat-UnionID": user["unionid"],
        "X-WeChat-Nickname": "%E5%BC%A0%E4%B8%89%F0%9F%9A%80",
        "X-WeChat-Avatar": user["avatar"],
        "X-WeChat-Provider": "wechat",
    }
    # The code went to the Official Account's app, and the profile was read with its token.
    exchanges = gw.calls("access_token")
    assert [c["params"]["appid"] for c in exchanges] == [oa]
    assert [c["outcome"] for c in gw.calls("userinfo")] == [0]
    assert_nothing_secret(gw.log_since(mark), *secrets_of(gw))


def test_unionid_links_one_person_across_both_flows(gw: Site) -> None:
    desk, phone = gw.browser(DESKTOP_UA), gw.browser(WECHAT_UA)
    gw.login(desk, "alice")
    gw.login(phone, "alice")
    on_desk = desk.get(gw.url + "/_gateway/userinfo").json()
    on_phone = phone.get(gw.url + "/_gateway/userinfo").json()
    user = gw.users()["alice"]
    assert on_desk["app_id"] == gw.website.app_id
    assert on_phone["app_id"] == gw.official_account.app_id
    assert on_desk["openid"] == user["openids"][gw.website.app_id]
    assert on_phone["openid"] == user["openids"][gw.official_account.app_id]
    assert on_desk["openid"] != on_phone["openid"]
    assert on_desk["unionid"] == on_phone["unionid"] == user["unionid"]
    assert on_desk["nickname"] == on_phone["nickname"] == "Alice"


def test_the_flow_is_the_one_the_login_started_with(gw: Site) -> None:
    """Started in WeChat, finished after "open in browser": still the Official Account's code."""
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser, "/switched"))
    browser.user_agent = DESKTOP_UA
    assert location(browser.get(callback_url)) == gw.url + "/switched"
    session = browser.session()
    assert session is not None
    assert session.app_id == gw.official_account.app_id


def test_snsapi_base_signs_in_without_a_profile_call(gw_base: Site) -> None:
    browser = gw_base.browser(WECHAT_UA)
    authorize = gw_base.begin(browser, "/base")
    assert dict(_query_pairs(authorize))["scope"] == "snsapi_base"
    callback = browser.get(gw_base.authorize(authorize, "alice"))
    assert location(callback) == gw_base.url + "/base"

    oa = gw_base.official_account.app_id
    user = gw_base.users()["alice"]
    echo = echo_of(browser.get(gw_base.url + "/base"))
    # No profile: the nickname and avatar headers are there, empty.
    assert echo.wechat_headers() == {
        "X-WeChat-OpenID": user["openids"][oa],
        "X-WeChat-AppID": oa,
        "X-WeChat-UnionID": user["unionid"],
        "X-WeChat-Nickname": "",
        "X-WeChat-Avatar": "",
        "X-WeChat-Provider": "wechat",
    }
    assert gw_base.calls("userinfo") == []  # WeChat would answer 48001
    info = browser.get(gw_base.url + "/_gateway/userinfo").json()
    assert (info["nickname"], info["avatar"]) == ("", "")


def test_desktop_login_next_to_snsapi_base_still_reads_the_profile(gw_base: Site) -> None:
    browser = gw_base.browser(DESKTOP_UA)
    gw_base.login(browser, "alice", "/desk")
    echo = echo_of(browser.get(gw_base.url + "/desk"))
    assert echo.value("X-WeChat-Nickname") == "Alice"
    assert [c["outcome"] for c in gw_base.calls("userinfo")] == [0]


# --- snapshot users -----------------------------------------------------------------------


@pytest.mark.parametrize("site", ["gw", "gw_base"])
def test_snapshot_user_gets_an_explanation_and_no_session(
    site: str, request: pytest.FixtureRequest
) -> None:
    gw_: Site = request.getfixturevalue(site)
    browser = gw_.browser(WECHAT_UA)
    mark = gw_.log_mark()
    callback_url = gw_.authorize(gw_.begin(browser, "/snap"), "snapshot")
    page = browser.get(callback_url, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert page.status_code == 401, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Use full service" in page.text
    assert_no_session_set(page)
    assert browser.session_value() is None
    retry = links(page.text)["Try again"]
    assert retry.startswith(gw_.url + "/_gateway/login")
    assert gw_.calls("userinfo") == []
    log = gw_.log_since(mark)
    assert "snapshot" in log
    assert "signed in openid" not in log
    assert_nothing_secret(page.text, *secrets_of(gw_))
    # Nothing of the virtual identity reaches the app.
    follow = browser.get(gw_.url + "/snap")
    assert follow.status_code == 302


def test_snapshot_page_in_chinese(gw: Site) -> None:
    browser = gw.browser(WECHAT_UA)
    callback_url = gw.authorize(gw.begin(browser), "snapshot")
    page = browser.get(callback_url, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 401
    assert "使用完整服务" in page.text
    assert links(page.text)["重试"].startswith(gw.url + "/_gateway/login")


def test_snapshot_user_can_then_authorize_properly(gw: Site) -> None:
    """After "Use full service" the same person is a real user: Try again signs them in."""
    browser = gw.browser(WECHAT_UA)
    page = browser.get(gw.authorize(gw.begin(browser, "/full"), "snapshot"))
    retry = browser.get(links(page.text)["Try again"])
    callback = browser.get(gw.authorize(location(retry), "alice"))
    assert location(callback) == gw.url + "/full"
    assert browser.session_value()


# --- fetch_profile ------------------------------------------------------------------------


def test_fetch_profile_off_never_calls_userinfo(gw_plain: Site) -> None:
    browser = gw_plain.browser(DESKTOP_UA)
    callback = gw_plain.login(browser, "zhangsan", "/quiet")
    assert location(callback) == gw_plain.url + "/quiet"
    assert gw_plain.calls("userinfo") == []
    website = gw_plain.website.app_id
    user = gw_plain.users()["zhangsan"]
    echo = echo_of(browser.get(gw_plain.url + "/quiet"))
    assert echo.wechat_headers() == {
        "X-WeChat-OpenID": user["openids"][website],
        "X-WeChat-AppID": website,
        "X-WeChat-UnionID": user["unionid"],
        "X-WeChat-Nickname": "",
        "X-WeChat-Avatar": "",
        "X-WeChat-Provider": "wechat",
    }


def test_fetch_profile_off_is_not_affected_by_a_broken_userinfo(gw_plain: Site) -> None:
    gw_plain.fault(endpoint="userinfo", mode="errcode", errcode=48001, times=5)
    browser = gw_plain.browser(DESKTOP_UA)
    assert location(gw_plain.login(browser, "alice", "/p")) == gw_plain.url + "/p"
