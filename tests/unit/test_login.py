"""The login flow in-process, where a fake clock makes time-dependent rules exact.

``Gateway`` is driven through Werkzeug's test client with a clock the test moves by hand;
WeChat is the simulator on a real loopback socket, so the gateway's WeChat client is the
real one. Cookies are carried by hand, which keeps every ``Set-Cookie`` visible. What only
a real server can show (gunicorn, header spellings, timeouts) is in
``tests/e2e/test_login.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from werkzeug.test import Client, TestResponse

from gateway.app import Gateway
from gateway.builder import build_gateway
from gateway.config import (
    AccessSettings,
    LoginSettings,
    SessionSettings,
    Settings,
    UpstreamSettings,
    WeChatSettings,
)
from gateway.simulator import SimulatorServer
from tests.helpers.support import SESSION_SECRET

PUBLIC_URL = "http://gateway.test"
COOKIE = "wechat_gateway"
LOGIN_COOKIE = "wechat_gateway_login"


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def _gateway(wechat: SimulatorServer, clock: Clock, **login: float) -> Gateway:
    website = wechat.simulator.app_of_kind("website")
    settings = Settings(
        public_url=PUBLIC_URL,
        wechat=WeChatSettings(
            app_id=website.app_id,
            app_secret=website.app_secret,
            open_base=wechat.url,
            api_base=wechat.url,
            timeout=2.0,
        ),
        session=SessionSettings(secret=SESSION_SECRET, secure=False),
        upstreams=(UpstreamSettings(prefix="/", url="http://127.0.0.1:9"),),
        access=AccessSettings(),
        login=LoginSettings(**login),
    )
    return build_gateway(settings, clock=clock)


class WsgiBrowser:
    """Carries the gateway's cookies by hand (name -> value); ``Max-Age=0`` deletes."""

    def __init__(self, gateway: Gateway) -> None:
        self.client = Client(gateway, use_cookies=False)
        self.cookies: dict[str, str] = {}

    def get(self, url: str) -> TestResponse:
        header = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        headers = {"Accept": "text/html", **({"Cookie": header} if header else {})}
        response = self.client.get(url.removeprefix(PUBLIC_URL), headers=headers)
        for line in response.headers.getlist("Set-Cookie"):
            pair = line.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if "Max-Age=0" in line or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def start(self, target: str = "/") -> str:
        """``/_gateway/login?rd=target``; the state sent to WeChat."""
        response = self.get(f"/_gateway/login?rd={target}")
        assert response.status_code == 302
        query = urlsplit(response.headers["Location"].split("#")[0]).query
        return parse_qs(query)["state"][0]


def _callback(wechat: SimulatorServer, state: str, user: str = "alice") -> str:
    code = wechat.simulator.mint_code(wechat.simulator.app_of_kind("website").app_id, user)
    return f"/_gateway/callback?code={code}&state={state}"


def test_a_login_lives_at_least_state_ttl(wechat: SimulatorServer) -> None:
    # Started late in a second: whole-second truncation must not shorten the login.
    clock = Clock(1_000.9)
    browser = WsgiBrowser(_gateway(wechat, clock, state_ttl=1))
    state = browser.start("/in-time")
    clock.now = 1_001.85
    response = browser.get(_callback(wechat, state))
    assert response.status_code == 302
    assert response.headers["Location"] == PUBLIC_URL + "/in-time"
    assert COOKIE in browser.cookies


def test_a_login_expires(wechat: SimulatorServer) -> None:
    clock = Clock(1_000.0)
    browser = WsgiBrowser(_gateway(wechat, clock, state_ttl=600))
    state = browser.start()
    clock.now = 1_601.0
    calls = len(wechat.simulator.calls("access_token"))
    response = browser.get(_callback(wechat, state))
    assert response.status_code == 400
    assert COOKIE not in browser.cookies
    assert len(wechat.simulator.calls("access_token")) == calls


def test_logins_in_several_tabs(wechat: SimulatorServer) -> None:
    browser = WsgiBrowser(_gateway(wechat, Clock(1_000.0)))
    first = browser.start("/one")
    second = browser.start("/two")
    response = browser.get(_callback(wechat, second))
    assert response.headers["Location"] == PUBLIC_URL + "/two"
    response = browser.get(_callback(wechat, first))
    assert response.headers["Location"] == PUBLIC_URL + "/one"


def test_only_the_latest_logins_are_kept(wechat: SimulatorServer) -> None:
    """A browser that starts login after login keeps a bounded number pending."""
    browser = WsgiBrowser(_gateway(wechat, Clock(1_000.0)))
    states = [browser.start(f"/tab{i}") for i in range(6)]
    assert len(browser.cookies[LOGIN_COOKIE]) < 3800
    assert browser.get(_callback(wechat, states[0])).status_code == 400
    response = browser.get(_callback(wechat, states[-1]))
    assert response.headers["Location"] == PUBLIC_URL + "/tab5"


def test_a_declined_login_is_forgotten(wechat: SimulatorServer) -> None:
    browser = WsgiBrowser(_gateway(wechat, Clock(1_000.0)))
    state = browser.start("/declined")
    declined = browser.get(f"/_gateway/callback?state={state}")
    assert declined.status_code == 401
    assert b"Try again" in declined.data
    assert browser.get(_callback(wechat, state)).status_code == 400


def test_snapshot_user_gets_no_session_and_no_profile_call(wechat: SimulatorServer) -> None:
    browser = WsgiBrowser(_gateway(wechat, Clock(1_000.0)))
    state = browser.start()
    calls = len(wechat.simulator.calls("userinfo"))
    response = browser.get(_callback(wechat, state, "snapshot"))
    assert response.status_code == 401
    assert COOKIE not in browser.cookies
    assert len(wechat.simulator.calls("userinfo")) == calls


def test_session_expires_with_the_gateways_clock(wechat: SimulatorServer) -> None:
    clock = Clock(1_000.0)
    gateway = _gateway(wechat, clock)
    browser = WsgiBrowser(gateway)
    assert browser.get(_callback(wechat, browser.start())).status_code == 302
    assert browser.get("/_gateway/userinfo").status_code == 200
    clock.now += gateway.login.max_age
    assert browser.get("/_gateway/userinfo").status_code == 401
