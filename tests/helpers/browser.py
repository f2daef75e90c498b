"""Helpers for tests that drive a real headless Chromium: the browser, and the demo to test.

``chromium(shots_dir)`` yields a ``ChromiumBrowser``: a Selenium driver for Debian's ``chromium``
and ``chromedriver`` (installed by ``make test``), plus explicit waits and screenshots.
Nothing is ever downloaded: the driver and browser paths are given to Selenium, so Selenium
Manager is not consulted, and Chromium runs with a fresh profile and every background
service that would call Google switched off. When the browser is missing the test fails,
saying how to install it, unless ``WECHAT_GATEWAY_SKIP_BROWSER=1`` is set.

``DemoProcess`` runs ``python -m gateway demo`` on a free port and waits for it to answer.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

SKIP_ENV = "WECHAT_GATEWAY_SKIP_BROWSER"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--lang=en-US",
)
WINDOW = (1000, 720)

T = TypeVar("T")


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    fallback = Path("/usr/bin") / name
    return str(fallback) if fallback.is_file() and os.access(fallback, os.X_OK) else None


def require_browser() -> tuple[str, str]:
    """Paths of ``chromium`` and ``chromedriver``; fails the test loudly when they are absent."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: real-browser tests skipped")
    chromium_path, driver_path = _find("chromium"), _find("chromedriver")
    missing = [
        package
        for package, path in (("chromium", chromium_path), ("chromium-driver", driver_path))
        if path is None
    ]
    if missing:
        pytest.fail(
            f"this test drives a real headless Chromium, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Run `make test` (it "
            "installs chromium and chromium-driver), "
            f"or `apt-get install chromium chromium-driver`; set {SKIP_ENV}=1 to skip it.",
            pytrace=False,
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail(
            "this test needs Selenium: run `make test`, or `pip install -e '.[test]'`; "
            f"set {SKIP_ENV}=1 to skip it.",
            pytrace=False,
        )
    assert chromium_path is not None and driver_path is not None
    return chromium_path, driver_path


class ChromiumBrowser:
    """A Selenium driver with explicit waits and screenshots saved under ``shots_dir``."""

    def __init__(self, driver: WebDriver, shots_dir: Path, timeout: float = 10.0) -> None:
        self.driver = driver
        self.shots_dir = shots_dir
        self.timeout = timeout

    def wait(self, condition: Callable[[WebDriver], T], message: str, timeout: float = 0) -> T:
        """Poll ``condition`` until it returns something truthy; fail with ``message``."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.05).until(
                condition
            )
        except TimeoutException:
            pytest.fail(
                f"timed out waiting for {message}; the browser is at {self.driver.current_url}",
                pytrace=False,
            )

    def wait_for_url(self, predicate: Callable[[str], bool], message: str) -> str:
        return self.wait(
            lambda d: d.current_url if predicate(d.current_url) else None, f"the URL: {message}"
        )

    def screenshot(self, name: str) -> Path:
        """The whole page (not only the window) as ``<shots_dir>/<name>.png``."""
        metrics: dict[str, Any] = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path = self.shots_dir / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.contextmanager
def chromium(shots_dir: Path, *, timeout: float = 10.0) -> Iterator[ChromiumBrowser]:
    """A fresh headless Chromium; on an exception, a screenshot and the page source are kept."""
    chromium_path, driver_path = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    shots_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium_path
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
        options.add_argument(f"--user-data-dir={profile}")
        service = Service(executable_path=driver_path, log_output=str(shots_dir / "driver.log"))
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(timeout)
        browser = ChromiumBrowser(driver, shots_dir, timeout)
        try:
            yield browser
        except BaseException:
            with contextlib.suppress(Exception):
                shot = browser.screenshot("failure")
                (shots_dir / "failure.html").write_text(driver.page_source, encoding="utf-8")
                print(f"browser at {driver.current_url}; screenshot {shot}")
            raise
        finally:
            driver.quit()


class DemoProcess:
    """``python -m gateway demo --port PORT`` as a child process; use as a context manager.

    Ready once ``/_gateway/healthz`` answers 200 and the banner has named the simulator's
    URL (``simulator_url``; the banner is looked for on stdout and stderr alike). Both
    streams are kept in ``directory``.
    """

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.simulator_url = ""
        self.stdout_path = directory / f"demo-{port}.out"
        self.stderr_path = directory / f"demo-{port}.err"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DemoProcess:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "demo", "--port", str(self.port)],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout=20)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo exited early:\n{self.log()}")
            found = re.search(r"simulator\s+(http://\S+)", self.log())
            if found and self._healthy():
                self.simulator_url = found.group(1).rstrip("/")
                return
            time.sleep(0.05)
        raise TimeoutError(f"the demo did not become healthy:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/_gateway/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        out = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        err = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
