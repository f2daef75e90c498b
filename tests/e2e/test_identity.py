"""Identity end to end: a profile that WeChat sends with half an emoji in it, through the
real server to ``/_gateway/userinfo`` and to the app. The identity headers themselves are
``tests/unit/test_identity.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.simulator import Fault
from tests.helpers.raw_e2e import RawBrowser, WeChat, start_gateway
from tests.helpers.support import GatewayProcess
from tests.helpers.upstreams import RawUpstream

# --- end to end: half an emoji from WeChat ---------------------------------------------------


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[GatewayProcess]:
    with start_gateway(tmp_path_factory.mktemp("identity"), wechat_app, raw.url) as gateway:
        yield gateway


def userinfo_reply(wechat: WeChat, user: str, nickname: str) -> str:
    """``/sns/userinfo``'s reply for ``user`` as WeChat writes it, with ``nickname`` put in
    as it is: JSON text, escapes and all. (The simulator writes its users' nicknames as raw
    UTF-8, which cannot hold a lone surrogate; this reply is served as a fault's body.)"""
    fields = {
        "openid": wechat.openid(user),
        "nickname": "NICKNAME",
        "sex": 0,
        "language": "",
        "city": "",
        "province": "",
        "country": "",
        "headimgurl": "https://thirdwx.qlogo.cn/mmopen/vi_32/half/132",
        "privilege": [],
        "unionid": wechat.unionid(user),
    }
    return json.dumps(fields).replace('"NICKNAME"', f'"{nickname}"')


@pytest.mark.usefixtures("clean_simulator")
def test_half_an_emoji_in_a_profile_reaches_userinfo_and_the_app_as_u_fffd(
    gw: GatewayProcess, wechat_app: WeChat
) -> None:
    """WeChat cuts nicknames mid-emoji and sends the half as ``\\ud83d``: a lone surrogate,
    with no UTF-8 form. Every answer of the session stays whole, with U+FFFD in its place."""
    wechat = wechat_app
    body = userinfo_reply(wechat, "alice", "half \\ud83d emoji")
    assert "\\ud83d" in body and json.loads(body)["nickname"] == "half \ud83d emoji"
    wechat.simulator.add_fault(Fault("userinfo", "garbage", body=body))
    browser = RawBrowser()
    signed_in = wechat.sign_in(browser, f"{gw.url}/_gateway/login?rd=/home", "alice")
    assert signed_in.status == 302, (signed_in.status, signed_in.text[:300])
    assert [call.outcome for call in wechat.simulator.calls("userinfo")] == ["garbage"]
    for _ in range(2):  # not only the first call of the session
        reply = browser.get(f"{gw.url}/_gateway/userinfo")
        assert reply.status == 200, (reply.status, reply.text[:300])
        info = reply.json()
        assert info["nickname"] == "half \ufffd emoji"
        assert info["openid"] == wechat.openid("alice")
    seen = browser.get(f"{gw.url}/home").echo()
    assert seen.value("X-WeChat-Nickname") == "half%20%EF%BF%BD%20emoji"
