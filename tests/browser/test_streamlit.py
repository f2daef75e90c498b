"""A real WebSocket application behind the gateway: Streamlit, in a real headless Chromium.

Streamlit is run as a user runs it (``streamlit run`` with the flags of
``docs/recipes/streamlit.md``: under ``/streamlit``, on loopback only, its Origin, Host and
XSRF checks left on), with the real gateway (gunicorn, default gevent worker, the recipe's
config) in front. Chromium signs in through the simulated WeChat; the page renders, which
takes its WebSocket (``/streamlit/_stcore/stream``) through the gateway's tunnel, and the
app greets the user with the identity headers of that WebSocket's handshake
(``st.context.headers``, and ``st.user`` through ``server.trustedUserHeaders``). Text typed
and sent with Enter makes the script run again and answer with the text and the nickname;
a file upload passes Streamlit's XSRF check; ``/_gateway/metrics`` counts the open tunnel
meanwhile, and closing the tab closes it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.simulator import SimulatorServer
from tests.helpers.browser import ChromiumBrowser, chromium, require_browser
from tests.helpers.support import GatewayProcess, base_config, free_port, stop_process

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parents[1] / "helpers" / "streamlit_app.py"
PREFIX = "/streamlit"
USER = "zhangsan"
NICKNAME_SHOWN = "张三🚀"  # "张三\x14🚀" with the control character removed
TYPED = "abc 你好"
OPEN_WEBSOCKETS = re.compile(r"^wechat_gateway_open_websockets (\d+)$", re.MULTILINE)
# No proxy from the environment: everything here is on loopback.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _streamlit_command() -> list[str]:
    """The ``streamlit`` command of this environment (never skipped: it is a test dependency)."""
    found = Path(sys.executable).with_name("streamlit")
    if found.is_file():
        return [str(found)]
    on_path = shutil.which("streamlit")
    if on_path is None:
        pytest.fail(
            "this test runs a real Streamlit app, but the `streamlit` command is not installed: "
            "run `make test`, or `pip install -e '.[test]'`",
            pytrace=False,
        )
    return [on_path]


def _get(url: str) -> tuple[int, str]:
    try:
        with _LOCAL.open(url, timeout=2) as reply:
            return int(reply.status), reply.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


@contextlib.contextmanager
def streamlit_app(port: int, directory: Path) -> Iterator[str]:
    """``streamlit run`` on ``127.0.0.1:port`` under ``PREFIX``; yields ``http://127.0.0.1:port``
    once it is healthy.

    The flags are the recipe's: only the gateway can reach it (``server.address``), the
    gateway's prefix is its base path, ``server.allowedHosts`` names the public host (the
    gateway forwards the browser's ``Host``), and the identity headers the gateway sets are
    mapped into ``st.user`` (``server.trustedUserHeaders``). CORS and XSRF protection stay on.
    """
    log_path = directory / f"streamlit-{port}.log"
    command = [
        *_streamlit_command(),
        "run",
        str(APP),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        f"--server.baseUrlPath={PREFIX.strip('/')}",
        "--server.allowedHosts=127.0.0.1",
        '--server.trustedUserHeaders={"X-WeChat-OpenID": "openid"}',
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while _get(url + PREFIX + "/_stcore/health") != (200, "ok"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "streamlit did not start:\n" + log_path.read_text(errors="replace"),
                    pytrace=False,
                )
            time.sleep(0.1)
        yield url
    finally:
        stop_process(process, signal.SIGTERM, timeout=10)


def _open_websockets(gateway_url: str) -> int:
    status, text = _get(gateway_url + "/_gateway/metrics")
    assert status == 200, status
    found = OPEN_WEBSOCKETS.search(text)
    assert found is not None, text
    return int(found.group(1))


def _poll(check: Callable[[], bool], message: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}", pytrace=False)
        time.sleep(0.1)


def _shows(browser: ChromiumBrowser, key: str, expected: str) -> None:
    """Wait until the app's container ``key`` (CSS class ``st-key-<key>``) reads ``expected``."""
    from selenium.webdriver.common.by import By

    def shown(driver: WebDriver) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, f".st-key-{key}")
        return bool(found) and found[0].text == expected

    browser.wait(shown, f"the app's {key!r} to read {expected!r}", timeout=20)


def test_streamlit_app_behind_the_gateway_in_chromium(
    tmp_path: Path, wechat: SimulatorServer
) -> None:
    require_browser()  # before starting anything: fail (or skip) at once
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    website = wechat.simulator.app_of_kind("website")
    openid = wechat.simulator.openid(website.app_id, USER)
    port, app_port = free_port(), free_port()
    with streamlit_app(app_port, tmp_path) as app_url:
        config = base_config(
            port,
            app_url,
            wechat={
                "app_id": website.app_id,
                "app_secret": website.app_secret,
                "open_base": wechat.url,
                "api_base": wechat.url,
            },
            upstreams=[{"prefix": PREFIX, "url": app_url, "timeout": 10}],
            # What the page polls to reconnect gets 401, not a sign-in redirect it can't follow.
            access={"api_paths": [PREFIX + "/_stcore/"]},
        )
        with (
            GatewayProcess(config, tmp_path) as gw,
            chromium(tmp_path / "screenshots", timeout=20) as browser,
        ):
            driver = browser.driver
            target = gw.url + PREFIX + "/"
            assert _open_websockets(gw.url) == 0
            assert _get(gw.url + PREFIX + "/_stcore/health")[0] == 401

            # Not signed in: to WeChat's QR page; "Scan as 张三🚀", and back to the app.
            driver.get(target)
            browser.wait_for_url(
                lambda url: url.startswith(wechat.url + "/connect/qrconnect?"), "WeChat's QR page"
            )
            scan = browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, f"a.btn[href$='?user={USER}']"),
                "the test identities",
            )[0]
            scan.click()
            browser.wait_for_url(lambda url: url == target, target)

            # The script ran, for a browser whose WebSocket came through the tunnel with the
            # identity headers: in st.context.headers, and mapped into st.user.
            _shows(browser, "greeting", f"Signed in as {NICKNAME_SHOWN}")
            _shows(browser, "openid", f"openid: {openid}")
            _shows(browser, "user", f"st.user openid: {openid}")
            _poll(lambda: _open_websockets(gw.url) >= 1, "the gateway to count the WebSocket")

            # Enter re-runs the script over the same WebSocket, and it answers.
            text_box = browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".st-key-typed input"), "the text box"
            )[0]
            text_box.send_keys(TYPED, Keys.ENTER)
            _shows(browser, "reply", f"Hello {NICKNAME_SHOWN}, you typed: {TYPED}")
            assert _open_websockets(gw.url) >= 1

            # An upload: a PUT that Streamlit accepts only with its XSRF cookie and token,
            # both passed through by the gateway.
            upload = tmp_path / "notes.txt"
            upload.write_bytes(b"x" * 1234)
            file_input = browser.wait(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".st-key-upload input[type=file]"),
                "the file uploader",
            )[0]
            file_input.send_keys(str(upload))
            _shows(browser, "uploaded", f"{NICKNAME_SHOWN} uploaded notes.txt: 1234 bytes")
            browser.screenshot("streamlit")

            # Closing the tab closes the WebSocket, and the tunnel with it. (Not a navigation
            # away: Chromium may keep the page, WebSocket and all, in its back/forward cache.)
            app_tab = driver.current_window_handle
            driver.switch_to.new_window("tab")
            other_tab = driver.current_window_handle
            driver.switch_to.window(app_tab)
            driver.close()
            driver.switch_to.window(other_tab)
            _poll(lambda: _open_websockets(gw.url) == 0, "the tunnel to close")

        log = gw.log()
    # Streamlit refused no WebSocket (its Origin/Host checks passed through the gateway).
    streamlit_log = (tmp_path / f"streamlit-{app_port}.log").read_text(errors="replace")
    assert "Rejecting WebSocket" not in streamlit_log, streamlit_log
    # The tunnel's access log line: status 101, written when it ended.
    assert re.search(rf'"GET {PREFIX}/_stcore/stream HTTP/1.1" 101 \d+ ', log), log
