"""The demo in a real browser, from the first page to the identity page and out again.

A headless Chromium opens ``wechat-gateway demo``'s app, is sent to the simulated WeChat
QR page, picks the test identity whose nickname has CJK, an emoji and a control character,
lands back on the page it asked for with the identity headers shown, signs out, and is
sent to WeChat again. Screenshots of the QR and identity pages are kept in the test's tmp
directory; set ``WECHAT_GATEWAY_SCREENSHOTS=DIR`` to also write them to ``DIR`` (the
README's are ``docs/screenshots``).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
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


def _sim_users(simulator_url: str) -> Any:
    with urllib.request.urlopen(simulator_url + "/_sim/users", timeout=5) as reply:
        return json.load(reply)


def _on_qr_page(browser: ChromiumBrowser, demo: DemoProcess) -> None:
    """The browser is on the simulator's QR page, showing a QR code and the test identities."""
    from selenium.webdriver.common.by import By

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
        a.get_attribute("href").rsplit("user=", 1)[1]: a.text
        for a in driver.find_elements(By.CSS_SELECTOR, "a.btn[href*='?user=']")
    }
    assert set(links) == {"alice", USER, "bob"}, links  # the snapshot user is not offered
    assert links["alice"] == "Scan as Alice"
    assert links[USER].startswith("Scan as 张三") and links[USER].endswith("🚀"), links[USER]


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
        assert driver.find_element(By.ID, "path").text == TARGET

        # The session cookie is there, but HttpOnly: page scripts cannot read it.
        cookie = driver.get_cookie(SESSION_COOKIE)
        assert cookie is not None, driver.get_cookies()
        assert cookie["httpOnly"] is True, cookie
        document_cookie = driver.execute_script("return document.cookie")
        assert SESSION_COOKIE not in document_cookie, document_cookie
        identity_shot = browser.screenshot("demo-identity")

        # 3. "Sign out": the gateway's signed-out page, and the cookie is gone.
        driver.find_element(By.ID, "logout").click()
        browser.wait_for_url(lambda url: url == demo.url + "/_gateway/logout", "the logout page")
        heading = browser.wait(lambda d: d.find_elements(By.TAG_NAME, "h1"), "the heading")[0]
        assert heading.text == "You are signed out"
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
