"""The ``Revalidator`` on its own, in this process: one check for many threads, a pause
after WeChat could not be asked, and an ended authorization remembered briefly. WeChat is
the simulator on a loopback socket (the ``wechat`` fixture); ``session.revalidate``
through the real gateway is ``tests/e2e/test_revalidation.py``."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.auth.session import Session
from gateway.login.revalidation import Revalidator
from gateway.providers.base import AuthorizationEnded
from gateway.providers.wechat.client import WeChatClient
from gateway.providers.wechat.provider import WeChatProvider
from gateway.simulator import Fault, SimulatorServer

pytestmark = pytest.mark.usefixtures("clean_simulator")
INTERVAL = 1
WECHAT_TIMEOUT = 1.0

# --- the Revalidator on its own, in this process ------------------------------------------


def _client_and_session(wechat: SimulatorServer) -> tuple[WeChatClient, Session]:
    website = wechat.simulator.app_of_kind("website")
    client = WeChatClient(
        website.app_id,
        website.app_secret,
        api_base=wechat.url,
        open_base=wechat.url,
        timeout=WECHAT_TIMEOUT,
    )
    token = client.exchange_code(wechat.simulator.mint_code(website.app_id, "alice"))
    now = int(time.time()) - 100
    session = Session(
        openid=token.openid,
        app_id=website.app_id,
        unionid=token.unionid,
        nickname="Alice",
        avatar="",
        issued_at=now,
        expires_at=now + 3600,
        refresh_token=token.refresh_token,
        validated_at=now,
    )
    wechat.simulator.clear_calls()
    return client, session


def _provider(client: WeChatClient) -> WeChatProvider:
    """The website app's provider around ``client``, as the gateway builds it."""
    return WeChatProvider(client, key="qr", timeout=WECHAT_TIMEOUT, fetch_profile=True, lang="cn")


def test_one_check_for_many_threads_at_once(wechat: SimulatorServer) -> None:
    client, session = _client_and_session(wechat)
    revalidator = Revalidator(INTERVAL, [_provider(client)], timeout=WECHAT_TIMEOUT)
    wechat.simulator.add_fault(Fault("refresh_token", "delay", delay=0.3))
    results: list[Session | None] = [None] * 10

    def check(index: int) -> None:
        results[index] = revalidator.revalidate(session)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(wechat.simulator.calls("refresh_token")) == 1
    first = results[0]
    assert first is not None and first is not session
    assert all(r is not None and r.validated_at == first.validated_at for r in results)
    client.close()


def test_after_wechat_could_not_be_asked_the_worker_pauses(wechat: SimulatorServer) -> None:
    client, session = _client_and_session(wechat)
    now = [time.time()]
    revalidator = Revalidator(30, [_provider(client)], timeout=WECHAT_TIMEOUT, clock=lambda: now[0])
    wechat.simulator.add_fault(Fault("refresh_token", "reset", times=5))
    assert revalidator.revalidate(session) is session
    now[0] += 29
    assert revalidator.revalidate(session) is session
    assert len(wechat.simulator.calls("refresh_token")) == 1
    now[0] += 2  # the pause is over: asked again, and this time it is down no more
    wechat.simulator.clear_faults()
    fresh = revalidator.revalidate(session)
    assert fresh is not session
    assert len(wechat.simulator.calls("refresh_token")) == 2
    client.close()


def test_gone_is_remembered_briefly(wechat: SimulatorServer) -> None:
    client, session = _client_and_session(wechat)
    revalidator = Revalidator(INTERVAL, [_provider(client)], timeout=WECHAT_TIMEOUT)
    wechat.simulator.revoke("alice")
    for _ in range(3):
        with pytest.raises(AuthorizationEnded):
            revalidator.revalidate(session)
    assert len(wechat.simulator.calls("refresh_token")) == 1
    client.close()
