"""Shared set-up for the "WeChat in the real world" end-to-end tests.

The tests in ``test_wechat_browser_flows``, ``test_duplicate_callback``,
``test_errcode_pages`` and ``test_revalidation`` (``tests/e2e``) run the real
``wechat-gateway serve`` (gunicorn, gevent workers) between a browser, the project's WeChat
simulator and the header-echo app (``tests.helpers.upstreams.EchoUpstream``): the
``wechat`` fixture of ``tests/conftest.py``, whose ``clean_simulator`` clears the
simulator's faults and calls around each test, and ``upstream`` of
``tests/e2e/conftest.py``. What they add to the helpers of ``tests.helpers.e2e``:

- a browser that says who it is: ``WECHAT_UA`` (WeChat's in-app browser, which makes the
  gateway use the Official Account flow) or ``DESKTOP_UA``;
- a ``Site`` that knows both WeChat apps, reads the simulator's call log and the part of
  the gateway's log written since a mark, and opens the session cookie with the test
  secret (``SessionCodec``) to look at, or age, what is sealed in it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from gateway.auth.session import Session, SessionCodec
from gateway.simulator import SimApp, SimulatorServer
from tests.helpers.e2e import HttpBrowser, location
from tests.helpers.support import COOKIE, SESSION_SECRET, GatewayProcess, base_config, free_port
from tests.helpers.upstreams import EchoUpstream

WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI "
    "Language/zh_CN"
)
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CODEC = SessionCodec(SESSION_SECRET)
# Access and refresh tokens, codes, cookie values: long runs of token characters.
TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{64,}")


class UABrowser(HttpBrowser):
    """A ``HttpBrowser`` that sends its own User-Agent on every request to the gateway."""

    def __init__(self, origin: str, user_agent: str) -> None:
        super().__init__(origin)
        self.user_agent = user_agent

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        return super().request(
            method, url, headers={"User-Agent": self.user_agent, **(headers or {})}, **kwargs
        )

    def session(self) -> Session | None:
        """The session sealed in this browser's cookie, opened with the test secret."""
        value = self.session_value()
        return CODEC.decode(value) if value else None

    def age_session(self, seconds: int) -> Session:
        """Pretend the login (and the last revalidation) happened ``seconds`` earlier."""
        session = self.session()
        assert session is not None, "no session to age"
        aged = dataclasses.replace(
            session,
            issued_at=session.issued_at - seconds,
            validated_at=(session.validated_at or session.issued_at) - seconds,
        )
        self.jar[(COOKIE, "/")] = CODEC.encode(aged)
        return aged


@dataclass
class Site:
    """A running gateway with the simulated WeChat and the echo app behind it."""

    gateway: GatewayProcess
    wechat: SimulatorServer
    upstream: EchoUpstream
    browsers: list[UABrowser] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def website(self) -> SimApp:
        return self.wechat.simulator.app_of_kind("website")

    @property
    def official_account(self) -> SimApp:
        return self.wechat.simulator.app_of_kind("official_account")

    def browser(self, user_agent: str = DESKTOP_UA) -> UABrowser:
        browser = UABrowser(self.url, user_agent)
        self.browsers.append(browser)
        return browser

    def begin(self, browser: HttpBrowser, target: str = "/") -> str:
        """Start a login at ``target`` as a browser does; return WeChat's authorize URL."""
        challenge = browser.get(self.url + target)
        start = browser.get(location(challenge))
        return location(start)

    def authorize(self, authorize_url: str, user: str = "alice") -> str:
        """``user`` confirms at WeChat (either flow); return the callback URL."""
        reply = requests.get(
            authorize_url.split("#", 1)[0] + f"&sim_user={user}",
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 302, (reply.status_code, reply.text[:300])
        callback = reply.headers["Location"]
        assert callback.startswith(self.url + "/_gateway/callback?"), callback
        return callback

    def login(
        self, browser: HttpBrowser, user: str = "alice", target: str = "/"
    ) -> requests.Response:
        return browser.get(self.authorize(self.begin(browser, target), user))

    # -- the simulator's side --

    def users(self) -> dict[str, dict[str, Any]]:
        reply = requests.get(self.wechat.url + "/_sim/users", timeout=10).json()
        return {user["key"]: user for user in reply["users"]}

    def calls(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        params = {"endpoint": endpoint} if endpoint else {}
        reply = requests.get(self.wechat.url + "/_sim/calls", params=params, timeout=10)
        calls: list[dict[str, Any]] = reply.json()["calls"]
        return calls

    def clear_calls(self) -> None:
        requests.delete(self.wechat.url + "/_sim/calls", timeout=10)

    def fault(self, **fault: Any) -> None:
        reply = requests.post(self.wechat.url + "/_sim/faults", json=fault, timeout=10)
        assert reply.status_code == 200, reply.text

    def clear_faults(self) -> None:
        requests.delete(self.wechat.url + "/_sim/faults", timeout=10)

    def revoke(self, user: str) -> None:
        reply = requests.post(self.wechat.url + "/_sim/revoke", json={"user": user}, timeout=10)
        assert reply.status_code == 200, reply.text

    def advance_clock(self, seconds: float) -> None:
        reply = requests.post(
            self.wechat.url + "/_sim/clock", json={"advance": seconds}, timeout=10
        )
        assert reply.status_code == 200, reply.text

    # -- the gateway's log --

    def log_mark(self) -> int:
        return len(self.gateway.log())

    def log_since(self, mark: int) -> str:
        return self.gateway.log()[mark:]

    def close_clients(self) -> None:
        while self.browsers:
            self.browsers.pop().http.close()


def deploy(
    tmp_path_factory: pytest.TempPathFactory,
    wechat: SimulatorServer,
    upstream: EchoUpstream,
    /,
    *,
    oa_scope: str | None = "snsapi_userinfo",
    timeout: float = 2.0,
    **overrides: Any,
) -> Iterator[Site]:
    """A gateway in front of ``upstream`` using ``wechat``'s website app for QR login and,
    unless ``oa_scope`` is None, its Official Account for WeChat's own browser."""
    simulator = wechat.simulator
    website = simulator.app_of_kind("website")
    section: dict[str, Any] = {
        "app_id": website.app_id,
        "app_secret": website.app_secret,
        "open_base": wechat.url,
        "api_base": wechat.url,
        "timeout": timeout,
        # English unless the request asks otherwise, whatever default the pages pick.
        "lang": "en",
    }
    if oa_scope is not None:
        oa = simulator.app_of_kind("official_account")
        section["official_account"] = {
            "app_id": oa.app_id,
            "app_secret": oa.app_secret,
            "scope": oa_scope,
        }
    overrides["wechat"] = {**section, **overrides.get("wechat", {})}
    config = base_config(free_port(), upstream.url, **overrides)
    with GatewayProcess(config, tmp_path_factory.mktemp("gateway")) as gateway:
        site = Site(gateway, wechat, upstream)
        try:
            yield site
        finally:
            # gunicorn waits for open keep-alive connections when it stops.
            site.close_clients()


def secrets_of(site: Site) -> tuple[str, ...]:
    """Values that must never appear in a page or a log line."""
    return (site.website.app_secret, site.official_account.app_secret, SESSION_SECRET)


def assert_nothing_secret(text: str, *extra: str) -> None:
    assert "Traceback" not in text
    for value in extra:
        assert value not in text
    found = TOKEN_LIKE.search(text)
    assert found is None, found


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
