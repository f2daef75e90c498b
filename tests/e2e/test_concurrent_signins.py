"""Many users signing in at once, through one gateway with several workers.

Every callback goes through the callback ledger (``gateway.ledger``), shared by the workers
through files: a claim of the code, the login state marked used, the outcome recorded, and
a sweep of old entries on every claim. Forty users signing in at the same moment, round
after round, make the workers' sweeps and claims interleave in every order. Each sign-in
must succeed, and each browser must come out with its own user's session, never another's:
checked through ``/_gateway/userinfo`` and through the identity the app receives.

WeChat is the project's simulator with forty users of its website app; the app is a
``RawUpstream`` that echoes each request as it arrived.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from gateway.simulator import SimApp, Simulator, SimulatorServer, SimUser
from tests.helpers.raw_e2e import RawBrowser, WeChat
from tests.helpers.support import COOKIE, GatewayProcess, base_config, free_port
from tests.helpers.upstreams import RawUpstream

USERS = [f"user{n:02d}" for n in range(40)]
ROUNDS = 4
WORKERS = 4
_SIGNED_IN = re.compile(r"\[(\d+)\] \[INFO\] gateway\.(?:login|audit): signed in")


@dataclass
class Deployment:
    gateway: GatewayProcess
    wechat: WeChat

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def crowd() -> Iterator[SimulatorServer]:
    avatar = "https://thirdwx.qlogo.cn/mmopen/vi_32/{}/132"
    simulator = Simulator(
        [SimApp("wx5e1a2b3c4d5e6f70", "5f2b8e0c1d9a4b7e6c3f0a1b2c3d4e5f", "website")],
        [SimUser(key, f"Member {key[-2:]}", avatar.format(key)) for key in USERS],
    )
    with SimulatorServer(simulator) as server:
        yield server


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, crowd: SimulatorServer, raw: RawUpstream
) -> Iterator[Deployment]:
    wechat = WeChat(crowd)
    port = free_port()
    config = base_config(
        port,
        raw.url,
        server={"workers": WORKERS},
        # The simulator shares this process with forty clients: slow, though never failing.
        wechat={**wechat.settings(), "timeout": 10},
    )
    with GatewayProcess(config, tmp_path_factory.mktemp("crowd")) as gateway:
        yield Deployment(gateway, wechat)


@dataclass
class Outcome:
    user: str
    callback: int
    userinfo_openid: str | None
    app_openid: str | None
    app_nickname: str | None
    detail: str = ""


def sign_in(gw: Deployment, user: str, round_: int, start: threading.Barrier) -> Outcome:
    """One browser signs ``user`` in, hop by hop, then asks the gateway and the app who it
    is; a failed callback is reported with its page's title."""
    browser = RawBrowser()
    target = f"/crowd/{user}/{round_}"
    start.wait()
    callback = gw.wechat.sign_in(browser, gw.url + target, user)
    if callback.status != 302 or browser.value_of(COOKIE) is None:
        title = re.search(r"<title>(.*?)</title>", callback.text)
        return Outcome(user, callback.status, None, None, None, title[1] if title else "")
    assert urlsplit(callback.location).path == target
    info = browser.get(gw.url + "/_gateway/userinfo")
    seen = browser.get(gw.url + target).echo()
    return Outcome(
        user,
        callback.status,
        info.json().get("openid") if info.status == 200 else None,
        seen.value("X-WeChat-OpenID"),
        seen.value("X-WeChat-Nickname"),
    )


@pytest.mark.slow
def test_forty_users_signing_in_at_once_all_get_their_own_session(gw: Deployment) -> None:
    outcomes: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(len(USERS)) as pool:
        for round_ in range(ROUNDS):
            start = threading.Barrier(len(USERS))
            futures = [pool.submit(sign_in, gw, user, round_, start) for user in USERS]
            outcomes += [future.result(timeout=60) for future in futures]
    assert len(outcomes) == len(USERS) * ROUNDS
    failed = [(o.user, o.callback, o.detail) for o in outcomes if o.callback != 302]
    assert failed == [], f"{len(failed)} of {len(outcomes)} callbacks failed: {failed[:5]}"
    for outcome in outcomes:
        openid = gw.wechat.openid(outcome.user)
        assert outcome.userinfo_openid == openid, outcome
        assert outcome.app_openid == openid, outcome
        assert outcome.app_nickname == f"Member%20{outcome.user[-2:]}", outcome
    # The callbacks really were spread over the workers, and none of them failed inside.
    log = gw.gateway.log()
    assert len(set(_SIGNED_IN.findall(log))) > 1, log[-2000:]
    assert "Traceback" not in log
