"""The callback's error pages offer the language switch, through a real sign-in: the real
``wechat-gateway serve`` in front of the header-echo app, with the project's WeChat
simulator on a socket.

A page at ``/_gateway/callback?code=…&state=…`` cannot link to itself with another
``lang=``: following the link would replay a spent callback and fail differently. So the
page carries both languages, the browser's first, and its switch is a ``#en``/``#zh``
fragment (shown by CSS ``:target``, no request made); ``tests/browser/test_login_page.py``
clicks it in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from gateway.simulator import SimulatorServer
from tests.helpers.e2e import assert_no_session_set, location
from tests.helpers.support import links
from tests.helpers.upstreams import EchoUpstream
from tests.helpers.wechat_e2e import Site, deploy

pytestmark = pytest.mark.usefixtures("clean_simulator")

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}
SWITCH = re.compile(r'<nav aria-label="[^"]*"><a href="([^"]*)" lang="([^"]*)"')


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat: SimulatorServer, upstream: EchoUpstream
) -> Iterator[Site]:
    yield from deploy(tmp_path_factory, wechat, upstream)


def halves(page: str, first: str, second: str) -> tuple[str, str]:
    """The page as negotiated and its hidden translation; both switches are fragments."""
    assert f'<div class="original" id="{first}">' in page, page[:800]
    original, translation = page.split(f'<div class="translation" id="{second}"', 1)
    assert SWITCH.findall(original) == [(f"#{second}", "en" if second == "en" else "zh-CN")]
    assert SWITCH.findall(translation) == [(f"#{first}", "en" if first == "en" else "zh-CN")]
    assert '<main class="message" hidden>' in translation
    assert "?lang=" not in page
    return original, translation


def cancelled_callback(gw: Site) -> tuple[requests.Response, str]:
    """A sign-in the user cancels on WeChat's QR page; the browser and the callback URL."""
    browser = gw.browser()
    authorize = gw.begin(browser, "/report")
    qr = requests.get(authorize, timeout=10)
    cancel = re.search(r'href="(/connect/scan/[^"]+\?cancel=1)"', qr.text)
    assert cancel is not None, qr.text[:500]
    reply = requests.get(gw.wechat.url + cancel.group(1), allow_redirects=False, timeout=10)
    callback = location(reply)
    assert callback.startswith(gw.url + "/_gateway/callback?state="), callback
    return browser.get(callback, headers=ZH), callback


def test_the_cancelled_page_switches_language_in_the_page(gw: Site) -> None:
    page, _callback = cancelled_callback(gw)
    assert page.status_code == 401
    assert_no_session_set(page)
    original, translation = halves(page.text, "zh", "en")
    assert "<h1>已取消登录</h1>" in original and "<h1>Sign-in cancelled</h1>" in translation
    # "Try again" starts a fresh sign-in in either language, back to where the user was going.
    tries = {links(original)["重试"], links(translation)["Try again"]}
    assert len(tries) == 1
    retry = tries.pop()
    assert retry.startswith(gw.url + "/_gateway/login?rd=")
    assert location(gw.browser().get(retry)).startswith(gw.wechat.url + "/connect/qrconnect?")


def test_a_bad_state_page_switches_language_in_the_page(gw: Site) -> None:
    browser = gw.browser()
    page = browser.get(gw.url + "/_gateway/callback?code=abc&state=Bogus123", headers=EN)
    assert page.status_code == 400
    original, translation = halves(page.text, "en", "zh")
    assert '<html lang="en">' in page.text
    assert "<h1>Sign-in link not valid</h1>" in original
    assert "<h1>登录链接无效</h1>" in translation
    assert gw.calls("access_token") == []


def test_a_wechat_failure_page_switches_language_in_the_page(gw: Site) -> None:
    browser = gw.browser()
    callback = gw.authorize(gw.begin(browser, "/report"))
    gw.fault(endpoint="access_token", mode="errcode", errcode=40029, times=5)
    page = browser.get(callback, headers=ZH)
    assert page.status_code == 502
    original, translation = halves(page.text, "zh", "en")
    assert "<h1>微信登录失败</h1>" in original and "<h1>WeChat sign-in failed</h1>" in translation


def test_the_gateway_s_other_pages_still_link_with_lang(gw: Site) -> None:
    page = gw.browser().get(gw.url + "/_gateway/logout?x=1", headers=ZH)
    assert SWITCH.findall(page.text) == [("?x=1&amp;lang=en", "en")]
    assert "translation" not in page.text.split("</style>", 1)[1]


def test_the_simulator_s_qr_page_follows_lang_then_the_browser(gw: Site) -> None:
    authorize = gw.begin(gw.browser(), "/report")
    assert "&lang=en" in authorize  # the gateway's wechat.lang
    english = requests.get(authorize, headers=ZH, timeout=10).text
    assert '<html lang="en">' in english and "Scan as Alice" in english
    chinese = requests.get(authorize.replace("&lang=en", ""), headers=ZH, timeout=10).text
    assert '<html lang="zh-CN">' in chinese and "以 Alice 身份扫码" in chinese
    # The test identity's control character shows as what it is.
    assert "以 张三\\x14🚀 身份扫码" in chinese
