"""The demo in a real browser, from the first page to the identity page and out again.

A headless Chromium opens ``wechat-gateway demo``'s app, is sent to the simulated WeChat
QR page, picks the test identity whose nickname has CJK, an emoji and a control character,
lands back on the page it asked for with the identity headers shown, signs out, and is
sent to WeChat again. Screenshots of the QR and identity pages are kept in the test's tmp
directory; set ``WECHAT_GATEWAY_SCREENSHOTS=DIR`` to also write them to ``DIR`` (the
README's are ``docs/screenshots``).

The sample page's live panel opens a WebSocket through the gateway to the sample app's
``/ws``: it must say whom the app saw in the upgrade request, tick, echo what is typed, be
counted by ``/_gateway/metrics``, and be closed by the gateway (1008) on a sign-out in
another tab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.browser import ChromiumBrowser, DemoProcess, chromium, require_browser
from tests.helpers.support import free_port

pytestmark = pytest.mark.browser

TARGET = "/welcome?from=browser-test"
USER = "zhangsan"
NICKNAME_SHOWN = "张三🚀"  # "张三\x14🚀" with the control character removed
SESSION_COOKIE = "wechat_gateway"


OPEN_WEBSOCKETS = re.compile(r"^wechat_gateway_open_websockets (\d+)$", re.MULTILINE)


def _sim_users(simulator_url: str) -> Any:
    with urllib.request.urlopen(simulator_url + "/_sim/users", timeout=5) as reply:
        return json.load(reply)


def _on_qr_page(browser: ChromiumBrowser, demo: DemoProcess) -> None:
    """The browser is on the gateway's sign-in page, which offers WeChat and WeCom (the demo
    has both); it follows the link to WeChat's QR page, which shows a QR code and the test
    identities."""
    from selenium.webdriver.common.by import By

    browser.wait(lambda d: d.find_elements(By.ID, "wx_fallback"), "the sign-in page").pop().click()

    browser.wait_for_url(
        lambda url: url.startswith(demo.simulator_url + "/connect/qrconnect?"),
        "the simulator's QR page",
    )
    driver = browser.driver
    qr = browser.wait(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".qr svg, .qr img"), "the QR code"
    )[0]
    assert qr.is_displayed()
    assert qr.size["width"] >= 100 and qr.size["height"] >= 100, qr.size
    assert driver.find_elements(By.CSS_SELECTOR, ".qr svg path, .qr img[src]"), "an empty QR"
    query = dict(part.split("=", 1) for part in urlsplit(driver.current_url).query.split("&"))
    assert query["redirect_uri"].startswith("http%3A%2F%2F127.0.0.1%3A"), query
    links = {
        (a.get_attribute("href") or "").rsplit("user=", 1)[1]: a.text
        for a in driver.find_elements(By.CSS_SELECTOR, "a.btn[href*='?user=']")
    }
    assert set(links) == {"alice", USER, "bob"}, links  # the snapshot user is not offered
    assert links["alice"] == "Scan as Alice"
    # The control character in the nickname shows as what it is, not as U+FFFD or nothing.
    assert links[USER] == "Scan as 张三\\x14🚀", links[USER]


#: What makes the sample app look like the gateway's own pages, read from the browser.
_LOOK = """
var main = document.querySelector("main"), body = document.body;
var b = getComputedStyle(body), m = getComputedStyle(main);
return {font: b.fontFamily, color: b.color, background: b.backgroundColor,
        card: m.backgroundColor, radius: m.borderTopLeftRadius, border: m.borderTopColor,
        button: getComputedStyle(document.querySelector("a.button")).backgroundColor};
"""


def test_demo_from_first_page_to_identity_page_and_out(tmp_path: Path) -> None:
    require_browser()  # before starting the demo: fail (or skip) at once
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    with DemoProcess(free_port(), tmp_path) as demo, chromium(shots) as browser:
        driver = browser.driver
        users = _sim_users(demo.simulator_url)
        website = next(a for a in users["apps"] if a["kind"] == "website")
        user = next(u for u in users["users"] if u["key"] == USER)
        openid = user["openids"][website["app_id"]]

        # 1. The first page: no session yet, so the browser ends up on WeChat's QR page.
        driver.get(demo.url + TARGET)
        _on_qr_page(browser, demo)
        qr_shot = browser.screenshot("demo-qr")

        # 2. "Scan as 张三🚀": back through the gateway's callback to the page asked for.
        driver.find_element(By.CSS_SELECTOR, f"a.btn[href$='?user={USER}']").click()
        browser.wait_for_url(lambda url: url == demo.url + TARGET, demo.url + TARGET)
        greeting = browser.wait(
            lambda d: d.find_elements(By.ID, "greeting"), "the sample app's greeting"
        )[0]
        assert greeting.text == f"Hello, {NICKNAME_SHOWN}!"
        cells = {
            cell.get_attribute("data-header"): cell.text
            for cell in driver.find_elements(By.CSS_SELECTOR, "td[data-header]")
        }
        assert cells["X-WeChat-OpenID"] == openid, cells
        assert cells["X-WeChat-AppID"] == website["app_id"], cells
        assert cells["X-WeChat-UnionID"] == user["unionid"], cells
        assert cells["X-WeChat-Nickname"] == "%E5%BC%A0%E4%B8%89%F0%9F%9A%80", cells
        assert cells["X-WeChat-Avatar"] == user["avatar"], cells
        assert cells["X-WeChat-Groups"] == "absent", cells  # the demo defines no groups
        assert driver.find_element(By.ID, "path").text == TARGET
        # The app verified the gateway's signed assertion against its JWKS.
        assertion = driver.find_element(By.ID, "assertion")
        assert assertion.get_attribute("data-verified") == "yes", assertion.text
        assert assertion.text.startswith(f"verified: signed by the gateway for {openid}")

        # The session cookie is there, but HttpOnly: page scripts cannot read it.
        cookie = driver.get_cookie(SESSION_COOKIE)
        assert cookie is not None, driver.get_cookies()
        assert cookie["httpOnly"] is True, cookie
        document_cookie = driver.execute_script("return document.cookie")
        assert SESSION_COOKIE not in document_cookie, document_cookie
        identity_shot = browser.screenshot("demo-identity")
        sample_look = driver.execute_script(_LOOK)

        # 3. "Sign out": the gateway's signed-out page, and the cookie is gone.
        driver.find_element(By.ID, "logout").click()
        browser.wait_for_url(lambda url: url == demo.url + "/_gateway/logout", "the logout page")
        heading = browser.wait(lambda d: d.find_elements(By.TAG_NAME, "h1"), "the heading")[0]
        assert heading.text == "You are signed out"
        # The sample app belongs with the gateway's pages: same fonts, colours, card, button.
        assert sample_look == driver.execute_script(_LOOK)
        assert driver.find_element(By.CSS_SELECTOR, "a.button").text == "Sign in again"
        assert driver.get_cookie(SESSION_COOKIE) is None, driver.get_cookies()
        browser.screenshot("signed-out")

        # 4. The app again: signed out, so back to WeChat's QR page.
        driver.get(demo.url + TARGET)
        _on_qr_page(browser, demo)

    publish = os.environ.get("WECHAT_GATEWAY_SCREENSHOTS")
    if publish:
        Path(publish).mkdir(parents=True, exist_ok=True)
        for shot in (qr_shot, identity_shot):
            shutil.copyfile(shot, Path(publish) / shot.name)


def _open_websockets(demo: DemoProcess) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(demo.url + "/_gateway/metrics", timeout=5) as reply:
        found = OPEN_WEBSOCKETS.search(reply.read().decode())
    assert found is not None
    return int(found.group(1))


def _poll_open_websockets(demo: DemoProcess, expected: Callable[[int], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not expected(count := _open_websockets(demo)):
        if time.monotonic() > deadline:
            pytest.fail(f"open WebSockets: {count}, waiting for {what}", pytrace=False)
        time.sleep(0.1)


def _shown(browser: ChromiumBrowser, element_id: str, expected: Callable[[str], bool]) -> str:
    """The text of ``#element_id`` once ``expected`` accepts it."""
    from selenium.webdriver.common.by import By

    def text(driver: Any) -> str | None:
        found = driver.find_elements(By.ID, element_id)
        value: str | None = found[0].text if found else None
        return value if value is not None and expected(value) else None

    shown = browser.wait(text, f"#{element_id} to change")
    assert shown is not None
    return shown


def test_demo_offers_wecom_beside_wechat(tmp_path: Path) -> None:
    """The demo's sign-in page shows both QR codes; a staff member signs in through WeCom's
    page and the sample app shows the WeCom identity headers."""
    require_browser()
    from selenium.webdriver.common.by import By

    with DemoProcess(free_port(), tmp_path) as demo, chromium(tmp_path / "shots") as browser:
        driver = browser.driver
        driver.get(demo.url + "/_gateway/login?lang=zh")
        headings = browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "h2"), "headings")
        assert [h.text for h in headings] == ["企业微信", "微信"]
        frame = driver.find_element(By.ID, "wecom_frame")
        assert frame.is_displayed() and frame.size["height"] >= 300, frame.size
        wechat_box = browser.wait(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#wx_qr iframe"), "WeChat's QR frame"
        )[0]
        assert wechat_box.is_displayed()
        for frame_element in (frame, wechat_box):  # each frame shows its QR code
            driver.switch_to.frame(frame_element)
            browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".qr svg"), "a QR code")
            driver.switch_to.default_content()
        time.sleep(1)  # frames found are not yet painted: the screenshot is for people
        browser.screenshot("demo-sign-in-both")
        driver.find_element(By.ID, "wecom_link").click()
        browser.wait_for_url(
            lambda url: url.startswith(demo.simulator_url + "/wwlogin/sso/login?"),
            "WeCom's web login",
        )
        browser.wait(
            lambda d: d.find_elements(By.CSS_SELECTOR, "a.btn[href$='?user=ZhangSan']"),
            "ZhangSan on WeCom's page",
        )[0].click()
        browser.wait_for_url(lambda url: url == demo.url + "/", "the sample app")
        cells = {
            cell.get_attribute("data-header"): cell.text
            for cell in browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, "td[data-header]"), "the headers"
            )
        }
        assert cells["X-WeChat-Provider"] == "wecom", cells
        assert cells["X-WeChat-UserID"] == "ZhangSan", cells
        assert cells["X-WeChat-Departments"] == "3", cells
        assert cells["X-WeChat-OpenID"] == "absent", cells


def test_demo_live_websocket_panel(tmp_path: Path) -> None:
    require_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with (
        DemoProcess(free_port(), tmp_path) as demo,
        chromium(tmp_path / "screenshots") as browser,
    ):
        driver = browser.driver
        driver.get(demo.url + "/")
        _on_qr_page(browser, demo)
        driver.find_element(By.CSS_SELECTOR, f"a.btn[href$='?user={USER}']").click()
        browser.wait_for_url(lambda url: url == demo.url + "/", "the sample app")

        # Open, for the user the gateway named in the upgrade request's headers.
        _shown(browser, "ws-status", lambda text: text == f"connected as {NICKNAME_SHOWN}")
        tick = re.compile(rf"^\d\d:\d\d:\d\d \(for {NICKNAME_SHOWN}\)$")
        first = _shown(browser, "ws-clock", lambda text: bool(tick.match(text)))
        _shown(browser, "ws-clock", lambda text: bool(tick.match(text)) and text != first)
        _poll_open_websockets(demo, lambda n: n == 1, "the panel's tunnel")

        # What is typed goes to the app and comes back.
        driver.find_element(By.ID, "ws-input").send_keys("你好, gateway", Keys.ENTER)
        echo = browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#ws-log li"), "the echo")[0]
        assert echo.text == f"{NICKNAME_SHOWN} said: 你好, gateway"
        browser.screenshot("demo-websocket")

        # Signed out in another tab: the gateway ends the panel's WebSocket with 1008.
        app_tab = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(demo.url + "/_gateway/logout")
        heading = browser.wait(lambda d: d.find_elements(By.TAG_NAME, "h1"), "the heading")[0]
        assert heading.text == "You are signed out"
        driver.switch_to.window(app_tab)
        _shown(browser, "ws-status", lambda text: text == "closed (1008: session ended)")
        _poll_open_websockets(demo, lambda n: n == 0, "the tunnel to end")
