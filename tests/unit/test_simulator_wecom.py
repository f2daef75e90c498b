"""The WeCom simulator: wire format, every errcode path, codes, tokens, pages, controls."""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
from dataclasses import replace
from urllib.parse import parse_qs, quote, urlsplit
from urllib.request import urlopen

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, TestResponse

from gateway.simulator import Simulator
from gateway.simulator.wecom import (
    DEMO_AGENT_ID,
    DEMO_CORP_ID,
    DEMO_DISABLED_AGENT_ID,
    DEMO_LEGACY_AGENT_ID,
    CodeScope,
    WeComApp,
    WeComCorp,
    WeComDepartment,
    WeComFault,
    WeComGuest,
    WeComMember,
    WeComSimulator,
    WeComSimulatorServer,
    callback_url,
)

CORP = DEMO_CORP_ID
AGENT = DEMO_AGENT_ID
LEGACY = DEMO_LEGACY_AGENT_ID
CALLBACK = "https://intranet.example.com/_gateway/callback"
LEGACY_CALLBACK = "https://legacy.example.com/cb"
IP = "203.0.113.7"
WECOM_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 wxwork/4.1.20 MicroMessenger/7.0.1 Language/zh"
)
CODE_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def hint(code: int, ip: str = IP) -> str:
    """The regex of WeCom's errmsg suffix."""
    return (
        r", hint: \[\d{25}\], from ip: "
        + re.escape(ip)
        + r", more info at https://open\.work\.weixin\.qq\.com/devtool/query\?e="
        + str(code)
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> WeComSimulator:
    return WeComSimulator.default(clock=clock)


@pytest.fixture
def client(sim: WeComSimulator) -> Client:
    return Client(sim)


def api(client: Client, path: str, *, ip: str = IP, **params: str) -> TestResponse:
    return client.get(f"/cgi-bin/{path}", query_string=params, environ_base={"REMOTE_ADDR": ip})


def body(resp: TestResponse) -> dict[str, object]:
    parsed = json.loads(resp.data)
    assert isinstance(parsed, dict)
    return parsed


def errcode(resp: TestResponse) -> int:
    value = body(resp)["errcode"]
    assert isinstance(value, int)
    return value


def token(client: Client, sim: WeComSimulator, agent_id: int = AGENT, ip: str = IP) -> str:
    resp = api(client, "gettoken", ip=ip, corpid=CORP, corpsecret=sim.app(agent_id).secret)
    assert errcode(resp) == 0, resp.data
    value = body(resp)["access_token"]
    assert isinstance(value, str)
    return value


def userinfo(client: Client, access: str, code: str, legacy: bool = False) -> TestResponse:
    path = "user/getuserinfo" if legacy else "auth/getuserinfo"
    return api(client, path, access_token=access, code=code)


# --- wire format --------------------------------------------------------------------------


def test_gettoken_reply_bytes(client: Client, sim: WeComSimulator) -> None:
    resp = api(client, "gettoken", corpid=CORP, corpsecret=sim.app().secret)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert re.fullmatch(
        rb'\{"errcode":0,"errmsg":"ok","access_token":"[A-Za-z0-9_-]{1,512}","expires_in":7200\}',
        resp.data,
    )


def test_error_reply_carries_the_hint_suffix(client: Client) -> None:
    first = api(client, "gettoken", corpid=CORP, corpsecret="wrong")
    second = api(client, "gettoken", corpid=CORP, corpsecret="wrong")
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "application/json; charset=UTF-8"
    pattern = r'\{"errcode":40001,"errmsg":"invalid credential' + hint(40001) + r'"\}'
    assert re.fullmatch(pattern, first.text)
    assert body(first)["errmsg"] != body(second)["errmsg"]  # a fresh hint each time


def test_non_ascii_is_raw_utf8_and_valid_json(client: Client, sim: WeComSimulator) -> None:
    resp = api(client, "user/get", access_token=token(client, sim), userid="lisi")
    assert "李四".encode() in resp.data and "🚀".encode() in resp.data
    assert b"\\u0014" in resp.data  # valid JSON: the control character escaped
    assert body(resp)["name"] == "李四\x14🚀"


# --- gettoken -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"corpsecret": "S"}, 41002),
        ({"corpid": "ww0000000000000000", "corpsecret": "S"}, 40013),
        ({"corpid": CORP}, 41004),
        ({"corpid": CORP, "corpsecret": ""}, 41004),
        ({"corpid": CORP, "corpsecret": "not-the-secret"}, 40001),
        ({"corpid": CORP, "corpsecret": "DISABLED"}, 50003),
    ],
)
def test_gettoken_errors(
    client: Client, sim: WeComSimulator, params: dict[str, str], expected: int
) -> None:
    if params.get("corpsecret") == "DISABLED":
        params = {**params, "corpsecret": sim.app(DEMO_DISABLED_AGENT_ID).secret}
    resp = api(client, "gettoken", **params)
    assert errcode(resp) == expected
    assert "access_token" not in body(resp)


def test_each_call_mints_a_new_token_and_old_ones_keep_working(
    client: Client, sim: WeComSimulator
) -> None:
    first, second = token(client, sim), token(client, sim)
    assert first != second
    for access in (first, second):
        assert errcode(api(client, "department/list", access_token=access)) == 0


def test_reuse_tokens_returns_the_same_token_while_valid(clock: FakeClock) -> None:
    sim = WeComSimulator.default(clock=clock, reuse_tokens=True)
    client = Client(sim)
    first = token(client, sim)
    clock.now += 100
    again = body(api(client, "gettoken", corpid=CORP, corpsecret=sim.app().secret))
    assert again["access_token"] == first and again["expires_in"] == 7100
    assert token(client, sim, LEGACY) != first
    clock.now += 7100
    assert token(client, sim) != first


def test_wrong_secrets_are_counted_per_ip(client: Client, sim: WeComSimulator) -> None:
    for _ in range(3):
        api(client, "gettoken", corpid=CORP, corpsecret="bad")
    api(client, "gettoken", ip="198.51.100.1", corpid=CORP, corpsecret="bad")
    assert sim.wrong_secrets(IP) == 3 and sim.wrong_secrets() == 4
    token(client, sim)  # no ban without ban_after
    assert sim.wrong_secrets() == 4


def test_ban_after_wrong_secrets(clock: FakeClock) -> None:
    sim = WeComSimulator.default(clock=clock, ban_after=2)
    client = Client(sim)
    assert errcode(api(client, "gettoken", corpid=CORP, corpsecret="bad")) == 40001
    assert errcode(api(client, "gettoken", corpid=CORP, corpsecret="bad")) == 40001
    right = {"corpid": CORP, "corpsecret": sim.app().secret}
    assert errcode(api(client, "gettoken", **right)) == 45009
    assert errcode(api(client, "gettoken", ip="198.51.100.1", **right)) == 0
    clock.now += 3600
    assert errcode(api(client, "gettoken", **right)) == 0


# --- the access token on every other endpoint ----------------------------------------------

ENDPOINT_CALLS = [
    ("auth/getuserinfo", {"code": "x"}),
    ("user/getuserinfo", {"code": "x"}),
    ("user/get", {"userid": "lisi"}),
    ("department/list", {}),
    ("department/simplelist", {}),
    ("department/get", {"id": "2"}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINT_CALLS)
def test_token_check_order(
    client: Client, sim: WeComSimulator, clock: FakeClock, path: str, params: dict[str, str]
) -> None:
    assert errcode(api(client, path, **params)) == 41001
    assert errcode(api(client, path, access_token="bogus", **params)) == 40014
    expiring, revoked = token(client, sim), token(client, sim)
    sim.invalidate_tokens(AGENT)
    assert errcode(api(client, path, access_token=revoked, **params)) == 40014
    clock.now += 7200
    # Expired is told before revoked.
    assert errcode(api(client, path, access_token=expiring, **params)) == 42001


def test_expired_errcode_can_be_40014(clock: FakeClock) -> None:
    sim = WeComSimulator.default(clock=clock, expired_errcode=40014)
    client = Client(sim)
    access = token(client, sim)
    clock.now += 7199
    assert errcode(api(client, "department/list", access_token=access)) == 0
    clock.now += 1
    assert errcode(api(client, "department/list", access_token=access)) == 40014


def test_early_invalidation_is_per_app(client: Client, sim: WeComSimulator) -> None:
    mine, other = token(client, sim), token(client, sim, LEGACY)
    resp = client.post("/_sim/wecom/invalidate", json={"agent_id": AGENT})
    assert resp.json == {"ok": True, "invalidated": 1}
    assert errcode(api(client, "user/get", access_token=mine, userid="lisi")) == 40014
    assert errcode(api(client, "user/get", access_token=other, userid="lisi")) == 0
    assert errcode(api(client, "user/get", access_token=token(client, sim), userid="lisi")) == 0


def test_app_disabled_after_the_token_was_issued(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    sim.update_app(AGENT, enabled=False)
    assert errcode(api(client, "user/get", access_token=access, userid="lisi")) == 50003
    assert errcode(api(client, "gettoken", corpid=CORP, corpsecret=sim.app().secret)) == 50003


def test_trusted_ips(client: Client, sim: WeComSimulator) -> None:
    sim.update_app(AGENT, trusted_ips=("198.51.100.1",))
    access = token(client, sim)  # gettoken is never checked against trusted IPs
    resp = api(client, "user/get", access_token=access, userid="lisi")
    assert errcode(resp) == 60020
    assert re.fullmatch("not allow to access from your ip" + hint(60020), str(body(resp)["errmsg"]))
    ok = api(client, "user/get", ip="198.51.100.1", access_token=access, userid="lisi")
    assert errcode(ok) == 0


# --- codes: auth/getuserinfo and user/getuserinfo ----------------------------------------


def test_member_code_gives_the_userid_only(client: Client, sim: WeComSimulator) -> None:
    code = sim.mint_code("LISI", CALLBACK)
    assert CODE_RE.fullmatch(code)
    resp = userinfo(client, token(client, sim), code)
    assert resp.data == b'{"errcode":0,"errmsg":"ok","userid":"lisi"}'


def test_legacy_userinfo_has_camelcase_keys_first(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    resp = userinfo(client, access, sim.mint_code("zhangsan", CALLBACK), legacy=True)
    assert resp.data == b'{"UserId":"ZhangSan","DeviceId":"","errcode":0,"errmsg":"ok"}'
    guest = userinfo(client, access, sim.mint_code("partner", CALLBACK), legacy=True)
    assert list(body(guest)) == ["OpenId", "DeviceId", "errcode", "errmsg"]
    assert body(guest)["OpenId"] == sim.openid("partner")
    in_app = sim.mint_code("lisi", CALLBACK, scope="snsapi_base")
    device = body(userinfo(client, access, in_app, legacy=True))["DeviceId"]
    assert isinstance(device, str) and re.fullmatch(r"[0-9a-f]{32}", device)


def test_non_member_gets_an_openid(client: Client, sim: WeComSimulator) -> None:
    resp = body(userinfo(client, token(client, sim), sim.mint_code("partner", CALLBACK)))
    assert resp == {
        "errcode": 0,
        "errmsg": "ok",
        "openid": sim.openid("partner"),
        "external_userid": sim.external_userid("partner"),
    }
    assert "userid" not in resp
    assert sim.openid("partner") == WeComSimulator.default().openid("partner")


def test_codes_are_single_use(client: Client, sim: WeComSimulator) -> None:
    access, code = token(client, sim), sim.mint_code("lisi", CALLBACK)
    assert errcode(userinfo(client, access, code)) == 0
    replay = userinfo(client, access, code)
    assert errcode(replay) == 40029
    assert str(body(replay)["errmsg"]).startswith("invalid code, hint: [")
    assert errcode(userinfo(client, access, code, legacy=True)) == 40029


def test_codes_expire_after_300_seconds(
    client: Client, sim: WeComSimulator, clock: FakeClock
) -> None:
    fresh, stale = sim.mint_code("lisi", CALLBACK), sim.mint_code("lisi", CALLBACK)
    clock.now += 299
    access = token(client, sim)
    assert errcode(userinfo(client, access, fresh)) == 0
    clock.now += 1
    assert errcode(userinfo(client, access, stale)) == 40029


def test_code_errors(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    assert errcode(api(client, "auth/getuserinfo", access_token=access)) == 41008
    assert errcode(userinfo(client, access, "A" * 43)) == 40029


def test_code_is_bound_to_its_redirect_domain(client: Client, sim: WeComSimulator) -> None:
    code = sim.mint_code("lisi", CALLBACK)
    legacy = token(client, sim, LEGACY)  # that app does not trust intranet.example.com
    refused = userinfo(client, legacy, code)
    assert errcode(refused) == 50001
    assert str(body(refused)["errmsg"]).startswith("redirect_uri unauthorized, hint: [")
    # Refused, not spent: the right app still redeems it.
    assert body(userinfo(client, token(client, sim), code))["userid"] == "lisi"
    # Any app trusting the code's host may redeem it, whichever app it was issued for.
    sim.update_app(LEGACY, trusted_domains=("legacy.example.com", "intranet.example.com"))
    assert errcode(userinfo(client, legacy, sim.mint_code("lisi", CALLBACK))) == 0


def test_another_corps_code_is_unknown(clock: FakeClock) -> None:
    other = WeComCorp(
        "ww00000000000000aa",
        "Other",
        (WeComApp(7, "s" * 43, trusted_domains=("intranet.example.com",)),),
        (WeComDepartment(1, "Other", parentid=0),),
        (WeComMember("lisi", "Li", (1,)),),
    )
    sim = WeComSimulator([WeComSimulator.default().corp(), other], clock=clock)
    client = Client(sim)
    code = sim.mint_code("lisi", CALLBACK, agent_id=7, corp_id=other.corp_id)
    assert errcode(userinfo(client, token(client, sim), code)) == 40029
    theirs = body(api(client, "gettoken", corpid=other.corp_id, corpsecret="s" * 43))
    assert errcode(userinfo(client, str(theirs["access_token"]), code)) == 0


def test_concurrent_redemptions_of_one_code_succeed_once(
    client: Client, sim: WeComSimulator
) -> None:
    access, code = token(client, sim), sim.mint_code("lisi", CALLBACK)
    results: list[int] = []

    def run() -> None:
        results.append(errcode(userinfo(Client(sim), access, code)))

    threads = [threading.Thread(target=run) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0] + [40029] * 15


# --- privateinfo: user_ticket and auth/getuserdetail ---------------------------------------


def detail(client: Client, access: str, payload: bytes) -> TestResponse:
    return client.post(
        f"/cgi-bin/auth/getuserdetail?access_token={access}",
        data=payload,
        content_type="application/json",
        environ_base={"REMOTE_ADDR": IP},
    )


def test_privateinfo_gives_a_user_ticket_and_details(
    client: Client, sim: WeComSimulator, clock: FakeClock
) -> None:
    access = token(client, sim)
    info = body(
        userinfo(client, access, sim.mint_code("lisi", CALLBACK, scope="snsapi_privateinfo"))
    )
    assert list(info) == ["errcode", "errmsg", "userid", "user_ticket"]
    ticket = str(info["user_ticket"])
    legacy = body(
        userinfo(client, access, sim.mint_code("lisi", CALLBACK, scope="snsapi_privateinfo"), True)
    )
    assert legacy["expires_in"] == 7200 and isinstance(legacy["user_ticket"], str)
    resp = detail(client, access, json.dumps({"user_ticket": ticket}).encode())
    got = body(resp)
    assert got["userid"] == "lisi" and got["gender"] == "2" and "name" not in got
    assert got["mobile"] == "13800000002" and str(got["qr_code"]).startswith(
        "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode="
    )
    other_app = token(client, sim, LEGACY)
    assert errcode(detail(client, other_app, json.dumps({"user_ticket": ticket}).encode())) == 84015
    clock.now += 1800
    assert errcode(detail(client, access, json.dumps({"user_ticket": ticket}).encode())) == 84014


def test_getuserdetail_errors(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    bad_json = detail(client, access, b"{user_ticket:")
    assert errcode(bad_json) == 47001
    assert "Warning: wrong json format." in str(body(bad_json)["errmsg"])
    assert errcode(detail(client, access, b'{"user_ticket":"nope"}')) == 84015
    assert errcode(detail(client, access, b"{}")) == 84015
    assert errcode(detail(client, "", b"{}")) == 41001


def test_no_user_ticket_for_web_base_or_invisible_members(
    client: Client, sim: WeComSimulator
) -> None:
    access = token(client, sim)
    scopes: list[CodeScope] = ["web", "snsapi_base"]
    for scope in scopes:
        got = body(userinfo(client, access, sim.mint_code("lisi", CALLBACK, scope=scope)))
        assert "user_ticket" not in got
    outside = sim.mint_code("Zhao.Liu", CALLBACK, scope="snsapi_privateinfo")
    assert body(userinfo(client, access, outside)) == {
        "errcode": 0,
        "errmsg": "ok",
        "userid": "Zhao.Liu",
    }


# --- user/get -----------------------------------------------------------------------------


def test_user_get_for_an_app_created_after_2022_06_20(client: Client, sim: WeComSimulator) -> None:
    got = body(api(client, "user/get", access_token=token(client, sim), userid="LiSi"))
    assert got["userid"] == "lisi" and got["name"] == "李四\x14🚀"
    assert got["department"] == [4, 3] and got["status"] == 1
    assert got["main_department"] == 4 and got["direct_leader"] == ["ZhangSan"]
    dropped = {"avatar", "thumb_avatar", "gender", "mobile", "email", "biz_mail", "qr_code"}
    assert not (dropped | {"address"}) & set(got)
    assert list(got)[:2] == ["errcode", "errmsg"]


def test_user_get_for_an_older_app_keeps_every_field(client: Client, sim: WeComSimulator) -> None:
    got = body(api(client, "user/get", access_token=token(client, sim, LEGACY), userid="zhangsan"))
    assert got["userid"] == "ZhangSan" and got["gender"] == "1"
    assert got["avatar"] == "https://wework.qpic.cn/wwpic/Zs4Xn9Qp2Lw/0"
    assert got["thumb_avatar"] == "https://wework.qpic.cn/wwpic/Zs4Xn9Qp2Lw/100"
    assert got["email"] == "zhangsan@example.com" and got["is_leader_in_dept"] == [1]
    assert {"mobile", "biz_mail", "qr_code", "address"} <= set(got)


def test_user_get_status_and_visible_departments(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    statuses = {
        userid: body(api(client, "user/get", access_token=access, userid=userid))["status"]
        for userid in ("zhangsan", "wangwu", "sunqi")
    }
    assert statuses == {"zhangsan": 1, "wangwu": 2, "sunqi": 4}
    # Visible by name only: its department (市场部) is outside the app's scope.
    by_name = body(api(client, "user/get", access_token=access, userid="qian-ba@hq"))
    assert by_name["department"] == [] and by_name["userid"] == "qian-ba@hq"
    whole = body(
        api(client, "user/get", access_token=token(client, sim, LEGACY), userid="qian-ba@hq")
    )
    assert whole["department"] == [5]


def test_user_get_errors(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    outside = api(client, "user/get", access_token=access, userid="zhao.liu")
    assert errcode(outside) == 60011
    assert str(body(outside)["errmsg"]).startswith(
        "no privilege to access/modify contact/party/agent , hint: ["
    )
    assert "department" not in body(outside)
    assert errcode(api(client, "user/get", access_token=access, userid="nobody")) == 60111
    assert errcode(api(client, "user/get", access_token=access, userid="partner")) == 60111
    assert errcode(api(client, "user/get", access_token=access)) == 41009


def test_disabling_and_removing_members(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    sim.update_member("LISI", status=2)
    assert body(api(client, "user/get", access_token=access, userid="lisi"))["status"] == 2
    resp = client.post("/_sim/wecom/member", json={"userid": "lisi", "remove": True})
    assert resp.status_code == 200
    assert errcode(api(client, "user/get", access_token=access, userid="lisi")) == 60111
    for bad in [
        {"userid": "nobody", "status": 2},
        {"userid": "zhangsan", "status": 3},
        {"userid": "zhangsan", "departments": [99]},
        {"userid": "zhangsan", "userid_new": "x"},
        {"userid": "nobody", "remove": True},
        [],
    ]:
        assert client.post("/_sim/wecom/member", json=bad).status_code == 400
    client.post("/_sim/wecom/member", json={"userid": "ZhangSan", "departments": [4]})
    assert body(api(client, "user/get", access_token=access, userid="zhangsan"))["department"] == [
        4
    ]


# --- departments --------------------------------------------------------------------------


def dept_ids(resp: TestResponse, key: str = "department") -> list[object]:
    items = body(resp)[key]
    assert isinstance(items, list)
    return [item["id"] for item in items]


def test_department_list(client: Client, sim: WeComSimulator) -> None:
    access, legacy = token(client, sim), token(client, sim, LEGACY)
    resp = api(client, "department/list", access_token=access)
    assert dept_ids(resp) == [2, 3, 4]
    items = body(resp)["department"]
    assert isinstance(items, list)
    assert items[0] == {
        "id": 2,
        "name": "研发中心",
        "name_en": "R&D",
        "department_leader": ["ZhangSan"],
        "parentid": 1,
        "order": 100000000,
    }
    assert dept_ids(api(client, "department/list", access_token=legacy)) == [1, 2, 3, 4, 5, 6]
    assert dept_ids(api(client, "department/list", access_token=legacy, id="5")) == [5, 6]
    assert dept_ids(api(client, "department/list", access_token=access, id="3")) == [3]


def test_department_order_puts_larger_first(clock: FakeClock) -> None:
    corp = WeComCorp(
        "ww00000000000000bb",
        "Corp",
        (WeComApp(1, "s" * 43),),
        (
            WeComDepartment(1, "root", parentid=0),
            WeComDepartment(2, "small", order=1),
            WeComDepartment(3, "big", order=9),
            WeComDepartment(4, "under small", parentid=2),
        ),
        (WeComMember("a", "A", (4,)),),
    )
    sim = WeComSimulator([corp], clock=clock)
    client = Client(sim)
    access = body(api(client, "gettoken", corpid=corp.corp_id, corpsecret="s" * 43))["access_token"]
    assert dept_ids(api(client, "department/list", access_token=str(access))) == [1, 3, 2, 4]


@pytest.mark.parametrize(
    ("path", "key"), [("department/list", "department"), ("department/simplelist", "department_id")]
)
def test_list_errors_carry_the_list_key(
    client: Client, sim: WeComSimulator, path: str, key: str
) -> None:
    access = token(client, sim)
    for params, expected in [
        ({}, 41001),
        ({"access_token": access, "id": "99"}, 60003),
        ({"access_token": access, "id": "abc"}, 60003),
        ({"access_token": access, "id": "5"}, 60011),
    ]:
        resp = api(client, path, **params)
        assert errcode(resp) == expected
        assert body(resp)[key] == []
        assert list(body(resp)) == ["errcode", "errmsg", key]


def test_simplelist_and_get(client: Client, sim: WeComSimulator) -> None:
    access = token(client, sim)
    simple = body(api(client, "department/simplelist", access_token=access, id="2"))
    assert simple["department_id"] == [
        {"id": 2, "parentid": 1, "order": 100000000},
        {"id": 3, "parentid": 2, "order": 100000000},
        {"id": 4, "parentid": 2, "order": 99999000},
    ]
    one = body(api(client, "department/get", access_token=access, id="4"))
    assert one["department"] == {
        "id": 4,
        "name": "前端组",
        "name_en": "Frontend",
        "department_leader": [],
        "parentid": 2,
        "order": 99999000,
    }
    assert errcode(api(client, "department/get", access_token=access)) == 60003
    missing = api(client, "department/get", access_token=access, id="5")
    assert errcode(missing) == 60011 and "department" not in body(missing)


# --- faults -------------------------------------------------------------------------------


def test_errcode_fault_does_not_spend_the_code(client: Client, sim: WeComSimulator) -> None:
    access, code = token(client, sim), sim.mint_code("lisi", CALLBACK)
    resp = client.post(
        "/_sim/wecom/faults",
        json={"endpoint": "auth_getuserinfo", "mode": "errcode", "errcode": -1, "times": 2},
    )
    assert resp.status_code == 200
    first = userinfo(client, access, code)
    assert re.fullmatch(
        r'\{"errcode":-1,"errmsg":"system busy' + hint(-1) + r'"\}',
        first.text,
    )
    assert errcode(userinfo(client, access, code)) == -1
    assert errcode(userinfo(client, access, code)) == 0


def test_errcode_fault_on_a_list_endpoint_has_the_list_key(
    client: Client, sim: WeComSimulator
) -> None:
    sim.add_fault(WeComFault("department_list", "errcode", errcode=45009))
    resp = api(client, "department/list", access_token=token(client, sim))
    assert errcode(resp) == 45009 and body(resp)["department"] == []


def test_http_status_and_garbage_faults(client: Client, sim: WeComSimulator) -> None:
    sim.add_fault(WeComFault("*", "http_status", status=502))
    sim.add_fault(WeComFault("gettoken", "garbage"))
    sim.add_fault(WeComFault("gettoken", "garbage", body='{"errcode":0'))
    failed = api(client, "user/get")
    assert failed.status_code == 502 and failed.data.startswith(b"<html>")
    garbage = api(client, "gettoken")
    assert garbage.status_code == 200 and b"502 Bad Gateway" in garbage.data
    assert api(client, "gettoken").data == b'{"errcode":0'
    assert errcode(api(client, "gettoken")) == 41002


def test_delay_fault_answers_late_and_spends_the_code(client: Client, sim: WeComSimulator) -> None:
    access, code = token(client, sim), sim.mint_code("lisi", CALLBACK)
    sim.add_fault(WeComFault("auth_getuserinfo", "delay", delay=0.05))
    started = time.monotonic()
    assert errcode(userinfo(client, access, code)) == 0
    assert time.monotonic() - started >= 0.05
    assert errcode(userinfo(client, access, code)) == 40029


def test_reset_fault_drops_the_connection(client: Client, sim: WeComSimulator) -> None:
    sim.add_fault(WeComFault("gettoken", "reset"))
    with pytest.raises(ConnectionResetError):
        api(client, "gettoken")
    assert [c.outcome for c in sim.calls("gettoken")] == ["reset"]


def test_hang_fault_holds_the_connection_until_released() -> None:
    sim = WeComSimulator.default()
    sim.add_fault(WeComFault("gettoken", "hang", delay=30))
    with WeComSimulatorServer(sim) as server:
        conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=0.3)
        conn.request("GET", f"/cgi-bin/gettoken?corpid={CORP}")
        with pytest.raises(TimeoutError):
            conn.getresponse()
        conn.close()
        started = time.monotonic()
        sim.add_fault(WeComFault("gettoken", "hang", delay=30))
        conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
        conn.request("GET", f"/cgi-bin/gettoken?corpid={CORP}")
        threading.Timer(0.2, sim.release_hangs).start()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            conn.getresponse()
        assert time.monotonic() - started < 5
        conn.close()
        assert errcode_of(server.url, f"/cgi-bin/gettoken?corpid={CORP}") == 41004


def errcode_of(base: str, path: str) -> int:
    with urlopen(base + path, timeout=5) as resp:
        value = json.loads(resp.read())["errcode"]
    assert isinstance(value, int)
    return value


def test_fault_listing_clearing_and_validation(client: Client) -> None:
    client.post("/_sim/wecom/faults", json={"endpoint": "*", "mode": "hang", "times": 3})
    listed = client.get("/_sim/wecom/faults").json
    assert listed is not None and listed["faults"][0]["times"] == 3
    client.delete("/_sim/wecom/faults")
    assert client.get("/_sim/wecom/faults").json == {"faults": []}
    bad_bodies: list[object] = [
        {"endpoint": "token", "mode": "garbage"},
        {"endpoint": "user_get", "mode": "explode"},
        {"endpoint": "user_get", "mode": "errcode", "times": 0},
        {"endpoint": "user_get", "mode": "delay", "delay": -1},
        {"endpoint": "user_get", "mode": "delay", "delay": True},
        {"endpoint": "user_get", "mode": "errcode", "errcode": "40029"},
        {"endpoint": "user_get", "mode": "http_status", "status": 99},
        {"endpoint": "user_get", "mode": "garbage", "body": 42},
        {"endpoint": "user_get"},
        [],
    ]
    for bad in bad_bodies:
        resp = client.post("/_sim/wecom/faults", json=bad)
        assert resp.status_code == 400 and "error" in (resp.json or {})


# --- call log -----------------------------------------------------------------------------


def test_call_log_redacts_secrets_codes_tokens_and_tickets(
    client: Client, sim: WeComSimulator
) -> None:
    secret = sim.app().secret
    access = token(client, sim)
    code = sim.mint_code("lisi", CALLBACK, scope="snsapi_privateinfo")
    ticket = str(body(userinfo(client, access, code))["user_ticket"])
    userinfo(client, access, code)
    detail(client, access, json.dumps({"user_ticket": ticket}).encode())
    api(client, "user/get", access_token=access, userid="lisi")
    calls = client.get("/_sim/wecom/calls?endpoint=auth_getuserinfo").json
    assert calls is not None
    assert [c["outcome"] for c in calls["calls"]] == [0, 40029]
    assert calls["calls"][0]["params"] == {"access_token": "<redacted>", "code": "<redacted>"}
    assert calls["calls"][0]["ip"] == IP
    gettoken = sim.calls("gettoken")[0]
    assert gettoken.params == {"corpid": CORP, "corpsecret": "<redacted>"}
    assert sim.calls("auth_getuserdetail")[0].params == {
        "access_token": "<redacted>",
        "user_ticket": "<redacted>",
    }
    assert sim.calls("user_get")[0].params["userid"] == "lisi"
    everything = json.dumps(client.get("/_sim/wecom/calls").json)
    for secret_value in (secret, access, code, ticket):
        assert secret_value not in everything
    client.delete("/_sim/wecom/calls")
    assert sim.calls() == []


# --- the web login (wwlogin/sso/login) -----------------------------------------------------


def sso(
    client: Client,
    *,
    path: str = "/wwlogin/sso/login",
    headers: dict[str, str] | None = None,
    **overrides: str,
) -> TestResponse:
    params = {
        "login_type": "CorpApp",
        "appid": CORP,
        "agentid": str(AGENT),
        "redirect_uri": CALLBACK,
        "state": "abc123",
        **overrides,
    }
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return client.get(f"{path}?{query}", headers=headers or {})


def pick_links(page: str) -> dict[str, str]:
    links = re.findall(r'href="(/wwopen/sim/pick/[^"?]+\?(?:user=[^"]+|deny=1))"', page)
    found = {}
    for link in links:
        query = parse_qs(urlsplit(link).query)
        found[query.get("user", ["deny"])[0]] = link
    return found


def callback_query(resp: TestResponse) -> dict[str, list[str]]:
    assert resp.status_code == 302, resp.text
    return parse_qs(urlsplit(resp.headers["Location"]).query, keep_blank_values=True)


def test_sso_page_lists_members_and_non_members(client: Client) -> None:
    resp = sso(client)
    assert resp.status_code == 200
    page = resp.text
    assert set(pick_links(page)) == {
        "ZhangSan",
        "lisi",
        "WangWu",
        "SunQi",
        "Zhao.Liu",
        "qian-ba@hq",
        "partner",
        "deny",
    }
    assert "李四\\x14🚀" in page  # the control character shows as what it is
    assert "/wwopen/sim/scan/" in page and "<svg" in page
    assert "企业微信登录" in page and '<html lang="zh-CN">' in page  # WeCom's default: Chinese


def test_sso_page_languages(client: Client) -> None:
    assert "Log in with WeCom" in sso(client, lang="en").text
    english = sso(client, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "Log in with WeCom" in english.text and "不在可见范围" not in english.text
    assert "outside visibility" in english.text
    assert "企业微信登录" in sso(client, lang="zh", headers={"Accept-Language": "en"}).text


def test_sso_pick_redirects_with_code_and_state_only(client: Client, sim: WeComSimulator) -> None:
    link = pick_links(sso(client).text)["lisi"]
    resp = client.get(link)
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?code=")
    query = callback_query(resp)
    assert set(query) == {"code", "state"} and query["state"] == ["abc123"]
    assert CODE_RE.fullmatch(query["code"][0])
    got = userinfo(client, token(client, sim), query["code"][0])
    assert body(got)["userid"] == "lisi"
    assert client.get(link).status_code == 410


def test_sso_trailing_slash_and_sim_user(client: Client, sim: WeComSimulator) -> None:
    assert "/wwopen/sim/pick/" in sso(client, path="/wwlogin/sso/login/").text
    query = callback_query(sso(client, sim_user="zhangsan"))
    assert body(userinfo(client, token(client, sim), query["code"][0]))["userid"] == "ZhangSan"


def test_sso_keeps_the_callbacks_query_and_fragment(client: Client) -> None:
    resp = sso(client, redirect_uri=CALLBACK + "?next=%2Fa#frag", sim_user="lisi")
    location = resp.headers["Location"]
    assert re.fullmatch(
        re.escape(CALLBACK) + r"\?next=%2Fa&code=[A-Za-z0-9_-]{43}&state=abc123#frag", location
    )


def test_sso_outside_visibility_gets_no_privilege_and_no_callback(client: Client) -> None:
    links = pick_links(sso(client).text)
    resp = client.get(links["Zhao.Liu"])
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert "无权限" in resp.text
    # The login is still open for someone who may use the app.
    assert client.get(links["lisi"]).status_code == 302
    assert "No permission" in sso(client, lang="en", sim_user="zhao.liu").text


def test_sso_lets_inactive_members_through_for_the_client_to_check(
    client: Client, sim: WeComSimulator
) -> None:
    for userid, status in (("WangWu", 2), ("SunQi", 4)):
        code = callback_query(sso(client, sim_user=userid))["code"][0]
        access = token(client, sim)
        assert body(userinfo(client, access, code))["userid"] == userid
        assert body(api(client, "user/get", access_token=access, userid=userid))["status"] == status


def test_sso_deny_sends_state_only(client: Client) -> None:
    resp = client.get(pick_links(sso(client).text)["deny"])
    assert resp.headers["Location"] == CALLBACK + "?state=abc123"


@pytest.mark.parametrize(
    ("overrides", "zh", "en"),
    [
        (
            {"redirect_uri": "https://evil.example/cb"},
            "redirect_uri 与配置的授权完成回调域名不一致",
            "does not match the app&#x27;s authorized callback domain",
        ),
        (
            {"redirect_uri": "http://intranet.example.com:8443/cb"},
            "redirect_uri 与配置的授权完成回调域名不一致",
            "authorized callback domain",
        ),
        ({"login_type": "ServiceApp"}, "请求参数错误", "Invalid request parameters"),
        ({"appid": "ww0000000000000000"}, "请求参数错误", "Invalid request parameters"),
        ({"agentid": "999"}, "请求参数错误", "Invalid request parameters"),
        ({"agentid": "x"}, "请求参数错误", "Invalid request parameters"),
        ({"redirect_uri": ""}, "请求参数错误", "Invalid request parameters"),
        ({"redirect_uri": "javascript:alert(1)"}, "请求参数错误", "Invalid request parameters"),
        ({"agentid": str(DEMO_DISABLED_AGENT_ID)}, "应用已停用", "This app is disabled"),
    ],
)
def test_sso_refusals(client: Client, overrides: dict[str, str], zh: str, en: str) -> None:
    resp = sso(client, **overrides)
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert zh in resp.text and "/wwopen/sim/pick/" not in resp.text
    assert en in sso(client, lang="en", **overrides).text


def test_trusted_domain_port_must_match(client: Client, sim: WeComSimulator) -> None:
    sim.update_app(AGENT, trusted_domains=("127.0.0.1:8000",))
    assert "/wwopen/sim/pick/" in sso(client, redirect_uri="http://127.0.0.1:8000/cb").text
    assert "/wwopen/sim/pick/" not in sso(client, redirect_uri="http://127.0.0.1:9000/cb").text
    assert "/wwopen/sim/pick/" not in sso(client, redirect_uri="http://127.0.0.1/cb").text


def test_login_expires(client: Client, clock: FakeClock) -> None:
    links = pick_links(sso(client).text)
    clock.now += 300
    assert client.get(links["lisi"]).status_code == 410
    assert client.get(links["deny"]).status_code == 410


def test_phone_scan_is_seen_by_polling(client: Client, sim: WeComSimulator) -> None:
    page = sso(client).text
    found = re.search(r'href="http://localhost(/wwopen/sim/scan/([^"]+))"', page)
    assert found is not None
    path, login = found.groups()
    assert client.get(f"/wwopen/sim/poll/{login}").json == {"status": "waiting", "redirect": None}
    phone = client.get(path)
    assert phone.status_code == 200 and 'name="user" value="lisi"' in phone.text
    assert client.get(f"/wwopen/sim/poll/{login}").json == {"status": "scanned", "redirect": None}
    refused = client.post(path, data={"user": "Zhao.Liu"})
    assert refused.status_code == 200 and "无权限" in refused.text
    assert client.post(path, data={"user": "nobody"}).status_code == 400
    assert client.post(path, data={"user": "lisi"}).status_code == 200
    polled = client.get(f"/wwopen/sim/poll/{login}").json
    assert polled is not None and polled["status"] == "confirmed"
    code = parse_qs(urlsplit(polled["redirect"]).query)["code"][0]
    assert body(userinfo(client, token(client, sim), code))["userid"] == "lisi"
    assert client.post(path, data={"user": "lisi"}).status_code == 410


def test_phone_deny_and_poll_expiry(client: Client, clock: FakeClock) -> None:
    denied = re.search(r"/wwopen/sim/scan/([^\"]+)", sso(client).text)
    expiring = re.search(r"/wwopen/sim/scan/([^\"]+)", sso(client).text)
    assert denied is not None and expiring is not None
    client.post(f"/wwopen/sim/scan/{denied.group(1)}", data={"deny": "1"})
    polled = client.get(f"/wwopen/sim/poll/{denied.group(1)}").json
    assert polled == {"status": "denied", "redirect": CALLBACK + "?state=abc123"}
    clock.now += 301
    assert client.get(f"/wwopen/sim/poll/{expiring.group(1)}").json == {
        "status": "expired",
        "redirect": None,
    }
    assert client.get(f"/wwopen/sim/scan/{expiring.group(1)}").status_code == 410


# --- the legacy QR page (wwopen/sso/qrConnect) ---------------------------------------------


def qrconnect(
    client: Client, headers: dict[str, str] | None = None, **overrides: str
) -> TestResponse:
    params = {"appid": CORP, "agentid": str(AGENT), "redirect_uri": CALLBACK, "state": "s1"}
    params.update(overrides)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return client.get(f"/wwopen/sso/qrConnect?{query}", headers=headers or {})


def test_qrconnect_success_adds_appid(client: Client, sim: WeComSimulator) -> None:
    resp = client.get(pick_links(qrconnect(client).text)["lisi"])
    location = resp.headers["Location"]
    assert re.fullmatch(
        re.escape(CALLBACK) + r"\?code=[A-Za-z0-9_-]{43}&state=s1&appid=" + CORP, location
    )
    code = callback_query(resp)["code"][0]
    assert body(userinfo(client, token(client, sim), code))["userid"] == "lisi"


def test_qrconnect_deny_and_visibility(client: Client) -> None:
    links = pick_links(qrconnect(client).text)
    assert "无权限" in client.get(links["Zhao.Liu"]).text
    assert client.get(links["deny"]).headers["Location"] == CALLBACK + "?state=s1"


@pytest.mark.parametrize(
    "overrides",
    [
        {"appid": "ww0000000000000000"},
        {"agentid": ""},
        {"agentid": "1000099"},
        {"redirect_uri": ""},
        {"redirect_uri": "https://evil.example/cb"},
        {"agentid": str(DEMO_DISABLED_AGENT_ID)},
    ],
)
def test_qrconnect_refusals(client: Client, overrides: dict[str, str]) -> None:
    resp = qrconnect(client, **overrides)
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert "该链接无法访问" in resp.text and "/wwopen/sim/pick/" not in resp.text
    assert "This link cannot be accessed" in qrconnect(client, lang="en", **overrides).text


def test_qrconnect_language_and_extra_params(client: Client) -> None:
    assert "企业微信登录" in qrconnect(client).text
    assert "Log in with WeCom" in qrconnect(client, {"Accept-Language": "en"}).text
    assert "Log in with WeCom" in qrconnect(client, lang="en").text
    tolerated = qrconnect(client, response_type="code", scope="snsapi_login")
    assert "/wwopen/sim/pick/" in tolerated.text


def test_qrconnect_in_the_legacy_iframe_sends_the_top_window(client: Client) -> None:
    framed = qrconnect(client, login_type="jssdk", version="1.2.7").text
    assert 'target="_top" href="/wwopen/sim/pick/' in framed
    assert 'target="_top"' not in qrconnect(client).text


# --- in-app authorization (connect/oauth2/authorize) ---------------------------------------


def authorize(
    client: Client,
    *,
    ua: str = WECOM_UA,
    redirect_uri: str = CALLBACK,
    extra: str = "",
    **overrides: str,
) -> TestResponse:
    params = {
        "appid": CORP,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "snsapi_base",
        "state": "xyz",
        "agentid": str(AGENT),
        **overrides,
    }
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return client.get(f"/connect/oauth2/authorize?{query}{extra}", headers={"User-Agent": ua})


def test_in_app_needs_the_wecom_client(client: Client) -> None:
    for ua in ("Mozilla/5.0 Chrome/120", "Mozilla/5.0 MicroMessenger/8.0.47"):
        resp = authorize(client, ua=ua, sim_user="lisi")
        assert resp.status_code == 200 and "Location" not in resp.headers
        assert "请在企业微信客户端打开链接" in resp.text
    assert "Open this link in WeCom" in authorize(client, ua="Chrome", lang="en").text
    assert authorize(client, ua="Mozilla/5.0 WxWork/4.1", sim_user="lisi").status_code == 302


def test_in_app_base_redirects_at_once(client: Client, sim: WeComSimulator) -> None:
    resp = authorize(client, redirect_uri=CALLBACK + "?action=get#/home", state="", sim_user="lisi")
    location = resp.headers["Location"]
    assert re.fullmatch(
        re.escape(CALLBACK) + r"\?action=get&code=[A-Za-z0-9_-]{43}&state=#/home", location
    )
    code = callback_query(resp)["code"][0]
    legacy = body(userinfo(client, token(client, sim), code, legacy=True))
    assert legacy["UserId"] == "lisi" and legacy["DeviceId"] != ""


def test_in_app_user_from_the_cookie(client: Client, sim: WeComSimulator) -> None:
    client.set_cookie("wecom_sim_user", "ZhangSan", domain="localhost")
    code = callback_query(authorize(client))["code"][0]
    assert body(userinfo(client, token(client, sim), code))["userid"] == "ZhangSan"


def test_in_app_without_a_session_shows_a_chooser(client: Client, sim: WeComSimulator) -> None:
    page = authorize(client).text
    links = {key: href for href, key in re.findall(r'href="([^"]+&amp;sim_user=([^"]+))"', page)}
    assert set(links) == {
        "ZhangSan",
        "lisi",
        "WangWu",
        "SunQi",
        "Zhao.Liu",
        "qian-ba%40hq",
        "partner",
    }
    resp = client.get(links["partner"].replace("&amp;", "&"), headers={"User-Agent": WECOM_UA})
    got = body(userinfo(client, token(client, sim), callback_query(resp)["code"][0]))
    assert got["openid"] == sim.openid("partner")


def test_in_app_base_works_outside_visibility(client: Client, sim: WeComSimulator) -> None:
    code = callback_query(authorize(client, sim_user="zhao.liu"))["code"][0]
    access = token(client, sim)
    assert body(userinfo(client, access, code))["userid"] == "Zhao.Liu"
    assert errcode(api(client, "user/get", access_token=access, userid="Zhao.Liu")) == 60011


def test_in_app_privateinfo_asks_consent(client: Client, sim: WeComSimulator) -> None:
    page = authorize(client, scope="snsapi_privateinfo", sim_user="lisi")
    assert page.status_code == 200
    links = pick_links(page.text)
    assert set(links) == {"lisi", "deny"}
    resp = client.get(links["lisi"])
    got = body(userinfo(client, token(client, sim), callback_query(resp)["code"][0]))
    assert got["userid"] == "lisi" and isinstance(got["user_ticket"], str)
    declined = pick_links(authorize(client, scope="snsapi_privateinfo", sim_user="lisi").text)
    assert client.get(declined["deny"]).headers["Location"] == CALLBACK + "?state=xyz"
    forged = pick_links(authorize(client, scope="snsapi_privateinfo", sim_user="lisi").text)
    assert client.get(forged["lisi"].replace("user=lisi", "user=ZhangSan")).status_code == 400


def test_in_app_privateinfo_outside_visibility(client: Client) -> None:
    resp = authorize(client, scope="snsapi_privateinfo", sim_user="Zhao.Liu")
    assert resp.status_code == 200 and "无权限" in resp.text and "Location" not in resp.headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"scope": "snsapi_privateinfo", "agentid": ""},
        {"scope": "snsapi_userinfo"},
    ],
)
def test_in_app_scopes_treated_as_base(
    client: Client, sim: WeComSimulator, overrides: dict[str, str]
) -> None:
    code = callback_query(authorize(client, sim_user="lisi", **overrides))["code"][0]
    assert body(userinfo(client, token(client, sim), code)) == {
        "errcode": 0,
        "errmsg": "ok",
        "userid": "lisi",
    }


def test_in_app_untrusted_domain(client: Client) -> None:
    evil = "https://evil.example/cb?x=1"
    resp = authorize(client, redirect_uri=evil, sim_user="lisi")
    assert resp.status_code == 302
    target = resp.headers["Location"]
    assert target == f"/wwopen/uriconfirm?err_type=domain_err&uri={quote(evil, safe='')}"
    page = client.get(target)
    assert page.status_code == 200 and "redirect_uri需使用应用可信域名" in page.text
    assert "trusted domains" in client.get(target + "&lang=en").text
    # Without agentid, any enabled app of the corp may trust it.
    legacy = authorize(client, redirect_uri=LEGACY_CALLBACK, agentid="", sim_user="lisi")
    assert legacy.headers["Location"].startswith(LEGACY_CALLBACK + "?code=")
    assert (
        authorize(client, redirect_uri=LEGACY_CALLBACK, sim_user="lisi")
        .headers["Location"]
        .startswith("/wwopen/uriconfirm?err_type=domain_err")
    )


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"state": "a-b"}, "84025"),
        ({"state": "a" * 129}, "84025"),
        ({"appid": "ww0000000000000000"}, "请求参数错误"),
        ({"agentid": "12"}, "请求参数错误"),
        ({"agentid": str(DEMO_DISABLED_AGENT_ID)}, "应用已停用"),
        ({"response_type": "token"}, "请求参数错误"),
        ({"scope": "snsapi_login"}, "请求参数错误"),
        ({"redirect_uri": "/relative"}, "请求参数错误"),
    ],
)
def test_in_app_refusals(client: Client, overrides: dict[str, str], text: str) -> None:
    resp = authorize(client, sim_user="lisi", **overrides)
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert text in resp.text


def test_in_app_unknown_simulated_user(client: Client) -> None:
    assert authorize(client, sim_user="nobody").status_code == 400


def test_in_app_code_without_agentid_is_redeemable_by_a_trusting_app(
    client: Client, sim: WeComSimulator
) -> None:
    code = callback_query(authorize(client, agentid="", sim_user="lisi"))["code"][0]
    assert errcode(userinfo(client, token(client, sim, LEGACY), code)) == 50001
    assert errcode(userinfo(client, token(client, sim), code)) == 0


# --- control API, index and model validation ----------------------------------------------


def test_control_code_clock_app_directory_reset(client: Client, sim: WeComSimulator) -> None:
    minted = client.post("/_sim/wecom/code", json={"user": "lisi", "redirect_uri": CALLBACK})
    assert minted.json is not None and CODE_RE.fullmatch(minted.json["code"])
    for bad in [
        {"user": "nobody", "redirect_uri": CALLBACK},
        {"user": "lisi", "redirect_uri": "nope"},
        {"user": "lisi", "redirect_uri": CALLBACK, "scope": "snsapi_login"},
        {"user": "lisi", "redirect_uri": CALLBACK, "agent_id": "1000002"},
        {"user": "lisi", "redirect_uri": CALLBACK, "corp_id": "ww0000000000000000"},
    ]:
        assert client.post("/_sim/wecom/code", json=bad).status_code == 400
    assert client.post("/_sim/wecom/clock", json={"advance": "soon"}).status_code == 400
    assert client.post("/_sim/wecom/clock", json={"advance": 300}).status_code == 200
    assert errcode(userinfo(client, token(client, sim), minted.json["code"])) == 40029

    resp = client.post(
        "/_sim/wecom/app", json={"agent_id": AGENT, "trusted_domains": ["127.0.0.1:8123"]}
    )
    assert resp.status_code == 200 and sim.app().trusted_domains == ("127.0.0.1:8123",)
    for bad_app in [
        {"agent_id": 1, "enabled": False},
        {"agent_id": AGENT, "trusted_domains": ["https://x.example"]},
        {"agent_id": AGENT, "nonsense": 1},
        {"agent_id": AGENT, "agent_id_x": 1},
    ]:
        assert client.post("/_sim/wecom/app", json=bad_app).status_code == 400

    directory = client.get("/_sim/wecom/directory").json
    assert directory is not None
    corp = directory["corps"][0]
    assert corp["corp_id"] == CORP
    assert sim.app().secret not in json.dumps(directory)
    visible = {m["userid"]: m["visible_to"] for m in corp["members"]}
    assert AGENT not in visible["Zhao.Liu"] and LEGACY in visible["Zhao.Liu"]
    assert AGENT in visible["qian-ba@hq"]
    assert corp["guests"][0]["openid"] == sim.openid("partner")

    sim.remove_member("lisi")
    client.post("/_sim/wecom/reset")
    assert sim.app().trusted_domains[0] == "intranet.example.com"
    assert any(m.userid == "lisi" for m in sim.corp().members)
    assert sim.calls() == []


def test_index_and_unknown_paths(client: Client) -> None:
    index = client.get("/", headers={"Accept-Language": "en"})
    assert index.status_code == 200 and CORP in index.text and "WeCom simulator" in index.text
    assert "李四\\x14🚀" in index.text
    assert client.get("/cgi-bin/nothing").status_code == 404
    assert client.get("/sns/userinfo").status_code == 404
    assert client.get("/_sim/wecom/reset").status_code == 405


def test_fallback_shares_one_port_with_the_wechat_simulator() -> None:
    wechat = Simulator.default()
    both = Client(WeComSimulator.default(fallback=wechat))
    oa = wechat.app_of_kind("official_account").app_id
    wx = both.get(
        f"/connect/oauth2/authorize?appid={oa}&redirect_uri={quote(CALLBACK, safe='')}"
        "&response_type=code&scope=snsapi_base&state=x&sim_user=alice"
    )
    assert wx.status_code == 302 and "appid" not in wx.headers["Location"]
    ww = authorize(both, sim_user="lisi")
    assert ww.status_code == 302 and CODE_RE.search(ww.headers["Location"])
    assert errcode(both.get("/cgi-bin/gettoken")) == 41002
    assert both.get("/sns/auth").status_code == 200
    assert both.get("/_sim/wecom/directory").status_code == 200
    assert both.get("/_sim/users").status_code == 200


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: WeComMember("-bad", "x", (1,)), "userid"),
        (lambda: WeComMember("a" * 65, "x", (1,)), "userid"),
        (lambda: WeComMember("ok", "x", (1,), status=3), "status"),
        (lambda: WeComMember("ok", "x", (1,), gender="m"), "gender"),
        (lambda: WeComApp(1, ""), "secret"),
        (lambda: WeComApp(1, "s", trusted_domains=("https://a.example",)), "host"),
        (lambda: WeComApp(1, "s", trusted_domains=("*.a.example",)), "host"),
        (lambda: WeComFault("*", "hang", delay=-1), "delay"),
    ],
)
def test_model_validation(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def corp_with(**changes: object) -> WeComCorp:
    base = WeComCorp(
        "ww00000000000000cc",
        "Corp",
        (WeComApp(1, "s" * 43),),
        (WeComDepartment(1, "root", parentid=0), WeComDepartment(2, "d")),
        (WeComMember("Alice", "A", (2,)),),
        (WeComGuest("guest", "G"),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"corp_id": "wx0000000000000000"}, "corp_id"),
        ({"members": (WeComMember("Alice", "A", (2,)), WeComMember("ALICE", "B", (2,)))}, "unique"),
        ({"guests": (WeComGuest("alice", "G"),)}, "non-member key"),
        ({"departments": (WeComDepartment(2, "d"),)}, "root"),
        (
            {"departments": (WeComDepartment(1, "r", parentid=0), WeComDepartment(3, "x", 9))},
            "parent",
        ),
        ({"members": (WeComMember("Bob", "B", (7,)),)}, "departments"),
        ({"members": (WeComMember("Bob", "B", ()),)}, "departments"),
        ({"apps": (WeComApp(1, "a"), WeComApp(1, "b"))}, "unique"),
    ],
)
def test_corp_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WeComSimulator([corp_with(**changes)])


# --- the server helper --------------------------------------------------------------------


def test_server_serves_on_loopback_without_logging_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = WeComSimulator.default()
    secret = sim.app().secret
    with caplog.at_level(logging.INFO), WeComSimulatorServer(sim) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.domain == server.url.removeprefix("http://")
        with urlopen(f"{server.url}/cgi-bin/gettoken?corpid={CORP}&corpsecret={secret}") as resp:
            assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
            reply = json.loads(resp.read())
        assert reply["errcode"] == 0 and reply["expires_in"] == 7200
        assert sim.calls("gettoken")[0].ip == "127.0.0.1"
    assert secret not in caplog.text
    assert "/cgi-bin/gettoken" in caplog.text


# --- callback_url -------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    query=st.text(alphabet="abc=&%2F", max_size=12),
    fragment=st.one_of(st.none(), st.text(alphabet="ab/?=&#", max_size=8)),
    state=st.text(alphabet="abcXYZ019", max_size=10),
)
def test_callback_url_appends_before_the_fragment(
    query: str, fragment: str | None, state: str
) -> None:
    uri = "https://h.example/cb" + (f"?{query}" if query else "")
    if fragment is not None:
        uri += f"#{fragment}"
    out = callback_url(uri, {"code": "C0de", "state": state})
    before, _, after = out.partition("#")
    assert before.endswith(f"code=C0de&state={state}")
    assert after == (fragment or "")
    assert before.startswith(uri.partition("#")[0])
