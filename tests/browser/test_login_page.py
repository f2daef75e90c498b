"""The sign-in page (``login.mode: page``) in a real headless Chromium, against the simulator.

``SignInSite`` is a small live WSGI app that serves ``gateway.pages``' sign-in page with the
simulator's ``wxLogin.js`` and QR page, its error and signed-out pages, and a callback
that trades the code for an identity with the simulated WeChat API. Chromium loads the
page and must report no Content-Security-Policy violation and no console error while
WeChat's script and iframe work. Clicking "Scan as Alice" inside the iframe must send the
top window, not the frame, to the callback with the login's state and a code that
WeChat accepts.

The real gateway (``login.mode: page``, gunicorn and all) runs too: from an app page through
the embedded QR code to the app, signed in.

Screenshots (sign-in page in Chinese and English, desktop and a 390x844 phone, an error
page, the signed-out page) land in the test's tmp directory; set
``WECHAT_GATEWAY_SCREENSHOTS=DIR`` to also write them to ``DIR`` (the docs' are
``docs/screenshots``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gateway.demo import sample_app
from gateway.errors import (
    GatewayError,
    LoginCancelled,
    LoginStateInvalid,
    ProviderBusy,
    SnapshotUser,
)
from gateway.providers.wechat.client import WeChatClient
from gateway.simulator import SimulatorServer
from gateway.web.pages import Branding, error_response, login_page_response, signed_out_response
from tests.helpers.browser import ChromiumBrowser, chromium, require_browser
from tests.helpers.support import GatewayProcess, base_config, free_port

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.browser

WXLOGIN_JS = "/connect/zh_CN/htmledition/js/wxLogin.js"
BRANDING = Branding(
    title="Acme Intranet",
    logo_url="/logo.svg",
    footer="Acme Corp · IT helpdesk: ext. 4321",
    default_lang="en",
)
LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
    b'<rect width="96" height="96" rx="20" fill="#1a56db"/>'
    b'<path d="M24 72 48 20l24 52H60l-5-12H41l-5 12Zm21-22h6l-3-8Z" fill="#fff"/></svg>'
)
MOBILE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
# Registered before any page script runs, in every frame: what the CSP blocked.
WATCH_CSP = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation', function (e) {"
    "  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);"
    "});"
)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Quiet: the query strings carry codes."""


class SignInSite:
    """A live WSGI app around ``gateway.pages``, with the simulator as WeChat."""

    def __init__(self, wechat: SimulatorServer) -> None:
        self.wechat = wechat
        website = wechat.simulator.app_of_kind("website")
        self.client = WeChatClient(
            website.app_id,
            website.app_secret,
            api_base=wechat.url,
            open_base=wechat.url,
            timeout=5,
        )
        self.states: set[str] = set()
        self.answered: dict[tuple[str | None, str | None], bytes] = {}
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self, threaded=True, request_handler=_Quiet
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.callback_url = self.url + "/_gateway/callback"

    def __enter__(self) -> SignInSite:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        path = environ["PATH_INFO"]
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        retry = (("Try again", "/_gateway/login"),)
        if path == "/_gateway/login":
            state = secrets.token_hex(16)
            self.states.add(state)
            return login_page_response(
                environ,
                start_response,
                appid=self.client.app_id,
                redirect_uri=self.callback_url,
                state=state,
                script_url=self.wechat.url + WXLOGIN_JS,
                fallback_url=self.client.qrconnect_url(self.callback_url, state),
                branding=BRANDING,
            )
        if path == "/_gateway/callback":
            answered = self.answered.get((query.get("state"), query.get("code")))
            if answered is not None:
                # The top window sent twice (the click, and the frame's poll seeing the
                # scan confirmed): the same answer, as the gateway gives it.
                start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                return [answered]
            try:
                if query.get("state") not in self.states:
                    raise LoginStateInvalid(actions=retry)
                self.states.discard(query["state"])
                if not query.get("code"):
                    raise LoginCancelled(actions=retry)
                token = self.client.exchange_code(query["code"])
                profile = self.client.userinfo(token.access_token, token.openid, "en")
            except GatewayError as error:
                return error_response(environ, start_response, error, branding=BRANDING)
            body = f'<p id="greeting">{profile.nickname}</p><p id="openid">{token.openid}</p>'
            self.answered[(query["state"], query["code"])] = body.encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body.encode()]
        if path == "/_gateway/logout":
            return signed_out_response(
                environ, start_response, login_url="/_gateway/login", branding=BRANDING
            )
        if path == "/busy":
            busy = ProviderBusy("errcode -1: system busy", retry_after=5, actions=retry)
            return error_response(environ, start_response, busy, branding=BRANDING)
        if path == "/snapshot":
            return error_response(
                environ, start_response, SnapshotUser(actions=retry), branding=BRANDING
            )
        if path == "/logo.svg":
            start_response("200 OK", [("Content-Type", "image/svg+xml")])
            return [LOGO]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]


@pytest.fixture(scope="module")
def site(wechat: SimulatorServer) -> Iterator[SignInSite]:
    with SignInSite(wechat) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[ChromiumBrowser]:
    require_browser()
    with chromium(tmp_path / "screenshots") as running:
        running.driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CSP}
        )
        yield running


def _problems(browser: ChromiumBrowser, status: int = 200) -> list[str]:
    """CSP violations seen by the page, and console errors seen by the browser (an error
    page's own status is logged as a failed load, and expected)."""
    driver = browser.driver
    own_status = (
        f"{driver.current_url} - Failed to load resource: "
        f"the server responded with a status of {status} "
    )
    violations: list[str] = driver.execute_script("return window.__csp || []")
    console = [
        f"{entry['level']} {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING")
        and "favicon.ico" not in entry["message"]
        and not (status != 200 and entry["message"].startswith(own_status))
    ]
    return violations + console


def _open_sign_in(browser: ChromiumBrowser, url: str, lang: str) -> Any:
    """Open the sign-in page and wait for WeChat's iframe to show the QR code."""
    from selenium.webdriver.common.by import By

    driver = browser.driver
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders",
        {"headers": {"Accept-Language": "zh-CN,zh;q=0.9" if lang == "zh" else "en-US,en"}},
    )
    driver.get(url)
    frame = browser.wait(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#wx_qr iframe"), "WeChat's iframe"
    )[0]
    driver.switch_to.frame(frame)
    try:
        browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".qr svg path"), "the QR code")
        links = driver.find_elements(By.CSS_SELECTOR, "a.btn[href*='?user=']")
        assert len(links) == 3, [a.text for a in links]
    finally:
        driver.switch_to.default_content()
    return frame


def _publish(*shots: Path) -> None:
    publish = os.environ.get("WECHAT_GATEWAY_SCREENSHOTS")
    if publish:
        Path(publish).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copyfile(shot, Path(publish) / shot.name)


def test_sign_in_page_embeds_wechat_and_the_click_moves_the_top_window(
    site: SignInSite, wechat: SimulatorServer, browser: ChromiumBrowser
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser.driver
    frame = _open_sign_in(browser, site.url + "/_gateway/login?rd=%2Fwiki", "en")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Acme Intranet"
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert frame.get_attribute("title") == "WeChat QR code for signing in"
    assert frame.size == {"width": 300, "height": 400}, frame.size
    logo = driver.find_element(By.CSS_SELECTOR, "header.brand img")
    assert driver.execute_script("return arguments[0].naturalWidth", logo) == 96
    assert "IT helpdesk" in driver.find_element(By.TAG_NAME, "footer").text

    # The iframe is WeChat's QR page for this login, redirect_uri encoded exactly once.
    src = urlsplit(frame.get_attribute("src"))
    assert f"{src.scheme}://{src.netloc}{src.path}" == wechat.url + "/connect/qrconnect"
    raw = dict(part.split("=", 1) for part in src.query.split("&"))
    assert raw["redirect_uri"] == "http%3A%2F%2F127.0.0.1%3A" + (
        f"{site.server.server_port}%2F_gateway%2Fcallback"
    )
    assert raw["login_type"] == "jssdk" and raw["self_redirect"] == "false"
    assert raw["lang"] == "en" and raw["state"] in site.states
    fallback = driver.find_element(By.ID, "wx_fallback")
    assert fallback.text == "Open WeChat's QR page"
    assert fallback.get_attribute("href") == site.client.qrconnect_url(
        site.callback_url, raw["state"]
    )
    assert _problems(browser) == []
    shot = browser.screenshot("login-page-en")

    # "Scan as Alice", clicked inside the frame: the top window goes to the callback.
    driver.switch_to.frame(frame)
    driver.find_element(By.CSS_SELECTOR, "a.btn[href$='?user=alice']").click()
    driver.switch_to.default_content()
    url = browser.wait_for_url(
        lambda u: u.startswith(site.callback_url + "?"), "the callback, in the top window"
    )
    assert parse_qs(urlsplit(url).query)["state"] == [raw["state"]]
    greeting = browser.wait(lambda d: d.find_elements(By.ID, "greeting"), "the identity")[0]
    assert greeting.text == "Alice"
    website = wechat.simulator.app_of_kind("website").app_id
    assert driver.find_element(By.ID, "openid").text == wechat.simulator.openid(website, "alice")
    _publish(shot)


def test_phone_confirmation_moves_the_top_window_too(
    site: SignInSite, wechat: SimulatorServer, browser: ChromiumBrowser
) -> None:
    """Confirmed on the phone, the frame's poll sends the top window on (or offers a link
    when the browser refuses a navigation the user did not click for)."""
    import requests
    from selenium.webdriver.common.by import By

    driver = browser.driver
    frame = _open_sign_in(browser, site.url + "/_gateway/login", "en")
    driver.switch_to.frame(frame)
    phone = driver.find_element(By.CSS_SELECTOR, "a.qr").get_attribute("href")
    assert requests.get(phone, timeout=5).status_code == 200
    assert requests.post(phone, data={"user": "zhangsan"}, timeout=5).status_code == 200
    browser.wait(
        lambda d: (
            d.current_url.startswith(site.callback_url)
            or d.find_elements(By.CSS_SELECTOR, "#status a[target=_top]")
        ),
        "the top window to move, or a link to move it",
    )
    links = driver.find_elements(By.CSS_SELECTOR, "#status a[target=_top]")
    if links:
        links[0].click()
    driver.switch_to.default_content()
    browser.wait_for_url(lambda u: u.startswith(site.callback_url + "?"), "the callback")
    greeting = browser.wait(lambda d: d.find_elements(By.ID, "greeting"), "the identity")[0]
    assert greeting.text.startswith("张三")


def test_screenshots_chinese_mobile_error_and_signed_out(
    site: SignInSite, browser: ChromiumBrowser
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser.driver
    shots = []

    _open_sign_in(browser, site.url + "/_gateway/login", "zh")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    assert driver.find_element(By.ID, "wx_fallback").text == "打开微信二维码页面"
    switch = driver.find_element(By.CSS_SELECTOR, "footer nav a")
    assert switch.text == "English"
    assert _problems(browser) == []
    shots.append(browser.screenshot("login-page-zh"))

    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", MOBILE)
    frame = _open_sign_in(browser, site.url + "/_gateway/login", "zh")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    assert frame.location["x"] >= 0 and frame.location["x"] + 300 <= 390, frame.location
    assert _problems(browser) == []
    shots.append(browser.screenshot("login-page-zh-mobile"))
    _open_sign_in(browser, site.url + "/_gateway/login", "en")
    shots.append(browser.screenshot("login-page-en-mobile"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**MOBILE, "width": 320})
    frame = _open_sign_in(browser, site.url + "/_gateway/login", "en")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 320
    assert frame.size["width"] == 300, frame.size
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # Cancelled on WeChat: the callback has a state but no code.
    frame = _open_sign_in(browser, site.url + "/_gateway/login", "zh")
    driver.switch_to.frame(frame)
    driver.find_element(By.CSS_SELECTOR, "a.btn[href$='?cancel=1']").click()
    driver.switch_to.default_content()
    browser.wait_for_url(lambda u: u.startswith(site.callback_url + "?"), "the callback")
    heading = browser.wait(lambda d: d.find_elements(By.TAG_NAME, "h1"), "the heading")[0]
    assert heading.text == "已取消登录"
    assert driver.find_element(By.CSS_SELECTOR, "a.button").text == "重试"
    assert _problems(browser, 401) == []
    shots.append(browser.screenshot("error-page-cancelled-zh"))
    # The language switch stays in the page (a link to the callback would replay it).
    callback = driver.current_url
    driver.find_element(By.CSS_SELECTOR, "footer nav a").click()
    english = driver.find_element(By.CSS_SELECTOR, "#en h1")
    browser.wait(lambda d: english.is_displayed(), "the page in English")
    assert english.text == "Sign-in cancelled"
    assert not heading.is_displayed()
    assert driver.current_url == callback + "#en"
    driver.find_element(By.CSS_SELECTOR, "#en footer nav a").click()
    browser.wait(lambda d: heading.is_displayed(), "the page in Chinese again")
    assert not english.is_displayed()
    assert _problems(browser, 401) == []

    driver.get(site.url + "/busy?lang=en")
    assert driver.find_element(By.TAG_NAME, "h1").text == "WeChat is busy"
    assert "Try again in about 5 seconds." in driver.find_element(By.TAG_NAME, "main").text
    assert _problems(browser, 503) == []
    shots.append(browser.screenshot("error-page-busy-en"))
    driver.find_element(By.CSS_SELECTOR, "footer nav a").click()
    browser.wait_for_url(lambda u: u.endswith("/busy?lang=zh"), "the page in Chinese")
    assert driver.find_element(By.TAG_NAME, "h1").text == "微信繁忙"
    assert _problems(browser, 503) == []

    driver.get(site.url + "/snapshot?lang=zh")
    assert driver.find_element(By.TAG_NAME, "h1").text == "请打开完整页面登录"
    assert "使用完整服务" in driver.find_element(By.TAG_NAME, "main").text
    assert _problems(browser, 401) == []
    shots.append(browser.screenshot("error-page-snapshot-zh"))

    driver.get(site.url + "/_gateway/logout?lang=en")
    assert driver.find_element(By.TAG_NAME, "h1").text == "You are signed out"
    assert _problems(browser) == []
    shots.append(browser.screenshot("signed-out-en"))
    _publish(*shots)


def test_without_wechat_script_the_page_still_offers_the_qr_page(
    site: SignInSite, browser: ChromiumBrowser
) -> None:
    """WeChat's script blocked (by a proxy, an extension, a network): say so, link on."""
    from selenium.webdriver.common.by import By

    driver = browser.driver
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*wxLogin.js"]})
    driver.get(site.url + "/_gateway/login?lang=en")
    note = browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#wx_qr .notice"), "a note")
    assert "could not be loaded" in note[0].text
    assert driver.find_element(By.ID, "wx_fallback").is_displayed()


# --- the real gateway ------------------------------------------------------------------------


def test_real_gateway_signs_in_through_the_embedded_qr_code(
    tmp_path: Path, wechat: SimulatorServer, browser: ChromiumBrowser
) -> None:
    from selenium.webdriver.common.by import By

    upstream = make_server("127.0.0.1", 0, sample_app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    website = wechat.simulator.app_of_kind("website")
    config = base_config(
        free_port(),
        f"http://127.0.0.1:{upstream.server_port}",
        wechat={
            "app_id": website.app_id,
            "app_secret": website.app_secret,
            "open_base": wechat.url,
            "api_base": wechat.url,
        },
        login={
            "mode": "page",
            "title": "Acme Intranet",
            "footer": "Acme Corp",
            "wxlogin_js": wechat.url + WXLOGIN_JS,
        },
    )
    try:
        with GatewayProcess(config, tmp_path) as gw:
            driver = browser.driver
            driver.get(gw.url + "/wiki/start?x=1")
            browser.wait_for_url(lambda u: u.startswith(gw.url + "/_gateway/login"), "sign-in")
            frame = browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#wx_qr iframe"), "WeChat's iframe"
            )[0]
            assert driver.find_element(By.TAG_NAME, "h1").text == "Acme Intranet"
            assert driver.find_element(By.TAG_NAME, "footer").text.startswith("Acme Corp")
            assert _problems(browser) == []
            driver.switch_to.frame(frame)
            link = browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, "a.btn[href$='?user=alice']"),
                "the test identities",
            )[0]
            link.click()
            driver.switch_to.default_content()
            browser.wait_for_url(lambda u: u == gw.url + "/wiki/start?x=1", "the app page")
            greeting = browser.wait(lambda d: d.find_elements(By.ID, "greeting"), "the app")
            assert greeting[0].text == "Hello, Alice!"
    finally:
        upstream.shutdown()
        upstream.server_close()
