"""Shared set-up for the WeCom (企业微信) end-to-end tests (``tests/e2e/test_wecom.py``).

Each ``WeComSite`` is a real ``wechat-gateway serve`` (gunicorn, gevent workers) in front of
the header-echo app, with its own simulator server on a loopback socket: the project's WeCom
simulator (``WeComSimulator.default()``, its demo corp, trusting the gateway's
``host:port``) falling back to the WeChat simulator (``Simulator.default()``) for every
request that is not WeCom's, so one base URL serves as every WeChat and WeCom base. A site
of its own per gateway keeps one gateway's tokens, faults and directory changes away from
the others.

The test drives the simulator the way a test of a real deployment would drive a staging
corp: over HTTP, through the ``/_sim/wecom/`` control API (faults, the call log, a member's
status, the app's visibility, early token invalidation), and picks who signs in with
``sim_user=`` on the simulator's own login pages. What the browser side offers on top of
``tests.helpers.e2e``: a browser that says who it is (``DESKTOP_UA``, ``WECOM_UA`` for the
WeCom client, ``WECHAT_UA`` for WeChat's), the gateway's log since a mark, and the links of
the gateway's sign-in page that offers a choice (``choice_links``).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from gateway.simulator import Simulator
from gateway.simulator.wecom import (
    DEMO_AGENT_ID,
    DEMO_CORP_ID,
    WeComSimulator,
    WeComSimulatorServer,
)
from tests.helpers.e2e import http_session, location
from tests.helpers.support import GatewayProcess, base_config, free_port
from tests.helpers.upstreams import EchoUpstream
from tests.helpers.wechat_e2e import DESKTOP_UA, UABrowser

#: The WeCom client's in-app browser: it says ``wxwork`` and also ``MicroMessenger``.
WECOM_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 "
    "Language/zh ColorScheme/Light"
)
#: ``wecom.timeout`` of every site: short, so that timeouts are quick to provoke.
WECOM_TIMEOUT = 1.0
CORP_ID = DEMO_CORP_ID
AGENT_ID = DEMO_AGENT_ID
#: The demo app's secret, which must never show in a page or a log line.
SECRET = WeComSimulator.default().app(DEMO_AGENT_ID).secret

_CHOICE = re.compile(r'<a id="(wecom_link|wx_fallback)" class="button" href="([^"]*)"')
_FRAME = re.compile(r'<iframe id="wecom_frame" src="([^"]*)"')
_DENY = re.compile(r'href="(/wwopen/sim/pick/[^"?]+\?deny=1)"')


@dataclass
class WeComSite:
    """A running gateway, its simulated WeCom (and WeChat), and the echo app behind it."""

    gateway: GatewayProcess
    server: WeComSimulatorServer
    upstream: EchoUpstream
    browsers: list[UABrowser] = field(default_factory=list)
    http: requests.Session = field(default_factory=http_session)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def sim(self) -> str:
        """The simulator's base URL: every WeChat and WeCom base of the config."""
        return self.server.url

    @property
    def wechat(self) -> Simulator:
        fallback = self.server.simulator.fallback
        assert isinstance(fallback, Simulator)
        return fallback

    def browser(self, user_agent: str = DESKTOP_UA) -> UABrowser:
        browser = UABrowser(self.url, user_agent)
        self.browsers.append(browser)
        return browser

    # -- the browser's side of a sign-in --

    def begin(self, browser: UABrowser, target: str = "/") -> str:
        """Start a sign-in at ``target`` as a browser does (the app's page, then the login
        redirect); return where the gateway sends it to sign in."""
        challenge = browser.get(self.url + target)
        start = browser.get(location(challenge))
        return location(start)

    def pick(self, login_url: str, user: str, user_agent: str = DESKTOP_UA) -> str:
        """``user`` signs in on the simulator's page at ``login_url`` (any flow); return
        the callback URL it sends the browser to."""
        reply = self.http.get(
            login_url.split("#", 1)[0] + f"&sim_user={user}",
            headers={"User-Agent": user_agent},
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 302, (reply.status_code, reply.text[:300])
        callback = reply.headers["Location"]
        assert callback.startswith(self.url + "/_gateway/callback?"), callback
        return callback

    def deny(self, login_url: str) -> str:
        """The person at WeCom's web login or QR page at ``login_url`` declines; return the
        callback URL WeCom sends the browser to (a state and no code)."""
        page = self.http.get(login_url, headers={"User-Agent": DESKTOP_UA}, timeout=10)
        found = _DENY.search(page.text)
        assert found is not None, page.text[:500]
        reply = self.http.get(self.sim + html.unescape(found.group(1)), allow_redirects=False)
        callback = location(reply)
        assert callback.startswith(self.url + "/_gateway/callback?"), callback
        return callback

    def login(self, browser: UABrowser, user: str, target: str = "/") -> requests.Response:
        """The whole sign-in; the callback's answer."""
        return browser.get(self.pick(self.begin(browser, target), user, browser.user_agent))

    def signed_in(self, user: str, target: str = "/", user_agent: str = DESKTOP_UA) -> UABrowser:
        """A browser in which ``user`` has signed in and landed on ``target``."""
        browser = self.browser(user_agent)
        reply = self.login(browser, user, target)
        assert location(reply) == self.url + target
        assert browser.session_value()
        return browser

    # -- the simulator's control API --

    def _control(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post(f"{self.sim}/_sim/wecom/{path}", json=payload, timeout=10)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    def calls(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """WeCom API calls received since the last ``clear_calls``."""
        params = {"endpoint": endpoint} if endpoint else {}
        reply = self.http.get(f"{self.sim}/_sim/wecom/calls", params=params, timeout=10)
        calls: list[dict[str, Any]] = reply.json()["calls"]
        return calls

    def outcomes(self, endpoint: str) -> list[int | str]:
        return [call["outcome"] for call in self.calls(endpoint)]

    def clear_calls(self) -> None:
        self.http.delete(f"{self.sim}/_sim/wecom/calls", timeout=10)

    def fault(self, **fault: Any) -> None:
        """``endpoint`` (``gettoken``, ``auth_getuserinfo``, ``user_get``...), ``mode``
        (``errcode``, ``http_status``, ``garbage``, ``delay``, ``reset``...), ``times``."""
        self._control("faults", fault)

    def clear_faults(self) -> None:
        self.http.delete(f"{self.sim}/_sim/wecom/faults", timeout=10)

    def member(self, userid: str, **changes: Any) -> None:
        """An admin changes a member (``status=2`` disables), or ``remove=True``."""
        self._control("member", {"userid": userid, **changes})

    def app(self, **changes: Any) -> None:
        """An admin changes the app's settings (visibility, trusted domains...)."""
        self._control("app", {"agent_id": AGENT_ID, **changes})

    def invalidate_tokens(self) -> int:
        """WeCom drops the app's access tokens early: they answer 40014."""
        return int(self._control("invalidate", {"agent_id": AGENT_ID})["invalidated"])

    def wechat_calls(self, endpoint: str) -> list[dict[str, Any]]:
        """The WeChat simulator's call log (the fallback behind the same port)."""
        reply = self.http.get(f"{self.sim}/_sim/calls", params={"endpoint": endpoint}, timeout=10)
        calls: list[dict[str, Any]] = reply.json()["calls"]
        return calls

    # -- the gateway's log --

    def log_mark(self) -> int:
        return len(self.gateway.log())

    def log_since(self, mark: int) -> str:
        return self.gateway.log()[mark:]

    def close_clients(self) -> None:
        while self.browsers:
            self.browsers.pop().http.close()
        self.http.close()


def deploy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: EchoUpstream,
    /,
    *,
    workers: int = 2,
    wechat: bool = False,
    wecom: dict[str, Any] | None = None,
    secret: str = SECRET,
    **overrides: Any,
) -> Iterator[WeComSite]:
    """A gateway in front of ``upstream`` signing in with the simulated WeCom's demo app
    (``wecom`` adds or changes keys of its section); with ``wechat``, also with the
    simulated WeChat (website app and Official Account); else without a ``wechat``
    section at all. ``overrides`` replace or extend the config's top-level sections."""
    port = free_port()
    simulator = WeComSimulator.default(
        trusted_domains=(f"127.0.0.1:{port}",), fallback=Simulator.default()
    )
    with WeComSimulatorServer(simulator) as server:
        config = base_config(port, upstream.url)
        config["server"]["workers"] = workers
        config["wecom"] = {
            "corp_id": CORP_ID,
            "agent_id": AGENT_ID,
            "secret": secret,
            "api_base": server.url,
            "login_base": server.url,
            "qrconnect_base": server.url,
            "open_base": server.url,
            "timeout": WECOM_TIMEOUT,
            **(wecom or {}),
        }
        if wechat:
            fallback = simulator.fallback
            assert isinstance(fallback, Simulator)
            website = fallback.app_of_kind("website")
            oa = fallback.app_of_kind("official_account")
            config["wechat"] = {
                "app_id": website.app_id,
                "app_secret": website.app_secret,
                "open_base": server.url,
                "api_base": server.url,
                "timeout": WECOM_TIMEOUT,
                "official_account": {"app_id": oa.app_id, "app_secret": oa.app_secret},
            }
        else:
            del config["wechat"]
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        with GatewayProcess(config, tmp_path_factory.mktemp("wecom")) as gateway:
            site = WeComSite(gateway, server, upstream)
            try:
                yield site
            finally:
                # gunicorn waits for open keep-alive connections when it stops.
                site.close_clients()


def clean(site: WeComSite) -> Iterator[WeComSite]:
    """For a per-test fixture over a module's site: no faults or calls from earlier tests,
    and no fault left for later ones."""
    site.clear_faults()
    site.clear_calls()
    yield site
    site.clear_faults()


def choice_links(page: str) -> dict[str, str]:
    """``wecom`` and ``wechat`` -> the link to each provider's own sign-in page on the
    gateway's page that offers them, plus ``frame``: the WeCom QR page it frames."""
    found = {
        "wecom" if name == "wecom_link" else "wechat": html.unescape(href)
        for name, href in _CHOICE.findall(page)
    }
    frame = _FRAME.search(page)
    if frame is not None:
        found["frame"] = html.unescape(frame.group(1))
    return found


def poll(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` holds, asked every 50 ms; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start
