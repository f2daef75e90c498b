"""The WeChat simulator: wire bytes, every errcode path, browser flows, control API."""

from __future__ import annotations

import json
import re
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, TestResponse

from gateway.simulator import Fault, SimApp, Simulator, SimUser, wire

WEB = "wx5e1a2b3c4d5e6f70"
OA = "wx9c8b7a6f5e4d3c21"
CALLBACK = "https://intranet.example.com/_gateway/callback"
RID = r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator.default(clock=clock)


@pytest.fixture
def client(sim: Simulator) -> Client:
    return Client(sim)


def secret_of(sim: Simulator, app_id: str) -> str:
    return next(app.app_secret for app in sim.apps if app.app_id == app_id)


def api(client: Client, path: str, **params: str) -> TestResponse:
    return client.get(path, query_string=params)


def body(resp: TestResponse) -> dict[str, object]:
    parsed = json.loads(resp.data.decode("utf-8"), strict=False)
    assert isinstance(parsed, dict)
    return parsed


def errcode(resp: TestResponse) -> int:
    value = body(resp).get("errcode", 0)
    assert isinstance(value, int)
    return value


def exchange(client: Client, sim: Simulator, code: str, app_id: str = WEB) -> TestResponse:
    return api(
        client,
        "/sns/oauth2/access_token",
        appid=app_id,
        secret=secret_of(sim, app_id),
        code=code,
        grant_type="authorization_code",
    )


def tokens(
    client: Client, sim: Simulator, user: str, app_id: str = WEB, **kw: str
) -> dict[str, object]:
    resp = exchange(client, sim, sim.mint_code(app_id, user, kw.get("scope")), app_id)
    assert errcode(resp) == 0
    return body(resp)


# --- wire format ------------------------------------------------------------------------


def test_userinfo_bytes_are_wechats_quirky_json(client: Client, sim: Simulator) -> None:
    t = tokens(client, sim, "zhangsan")
    resp = api(
        client, "/sns/userinfo", access_token=str(t["access_token"]), openid=str(t["openid"])
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain"
    raw = resp.data
    assert "张三".encode() in raw and "🚀".encode() in raw
    assert b"\x14" in raw
    assert b"\\u" not in raw
    assert b'"headimgurl":"https:\\/\\/thirdwx.qlogo.cn\\/mmopen\\/vi_32\\/' in raw
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.decode("utf-8"))
    profile = body(resp)
    assert profile["nickname"] == "张三\x14🚀"
    assert profile["sex"] == 0 and profile["privilege"] == []
    assert profile["province"] == profile["city"] == profile["country"] == ""
    assert str(profile["headimgurl"]).startswith("https://thirdwx.qlogo.cn/mmopen/vi_32/")


def test_crlf_and_quotes_in_nickname_stay_raw(client: Client, sim: Simulator) -> None:
    t = tokens(client, sim, "bob")
    resp = api(
        client, "/sns/userinfo", access_token=str(t["access_token"]), openid=str(t["openid"])
    )
    assert b'Bob \\"\\\\o\\/\\"\r\nX-WeChat-OpenID: forged' in resp.data
    assert body(resp)["nickname"] == 'Bob "\\o/"\r\nX-WeChat-OpenID: forged'


def test_error_reply_format_has_fresh_rid(client: Client) -> None:
    first = api(client, "/sns/oauth2/access_token", appid=WEB, secret="x", code="y")
    second = api(client, "/sns/oauth2/access_token", appid=WEB, secret="x", code="y")
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "text/plain"
    pattern = rb'\{"errcode":40125,"errmsg":"invalid appsecret, rid: ' + RID.encode() + rb'"\}'
    assert re.fullmatch(pattern, first.data)
    assert first.data != second.data


# --- /sns/oauth2/access_token -------------------------------------------------------------


def test_exchange_returns_tokens_and_spends_the_code(client: Client, sim: Simulator) -> None:
    code = sim.mint_code(WEB, "alice")
    first = body(exchange(client, sim, code))
    assert first["expires_in"] == 7200
    assert first["openid"] == sim.openid(WEB, "alice")
    assert first["unionid"] == sim.unionid("alice")
    assert first["scope"] == "snsapi_login"
    assert "is_snapshotuser" not in first
    assert first["access_token"] != first["refresh_token"]
    assert errcode(exchange(client, sim, code)) == 40163


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"secret": "S", "code": "C", "grant_type": "authorization_code"}, 41002),
        ({"appid": "wx0000000000000000", "secret": "S", "code": "C"}, 40013),
        ({"appid": WEB, "code": "C", "grant_type": "authorization_code"}, 41004),
        ({"appid": WEB, "secret": "wrong", "code": "C", "grant_type": "authorization_code"}, 40125),
        ({"appid": WEB, "secret": "S", "code": "C", "grant_type": "client_credential"}, 40002),
        ({"appid": WEB, "secret": "S", "grant_type": "authorization_code"}, 41008),
        ({"appid": WEB, "secret": "S", "code": "nope", "grant_type": "authorization_code"}, 40029),
    ],
)
def test_exchange_errors(
    client: Client, sim: Simulator, params: dict[str, str], expected: int
) -> None:
    if params.get("secret") == "S":
        params = {**params, "secret": secret_of(sim, WEB)}
    assert errcode(api(client, "/sns/oauth2/access_token", **params)) == expected


def test_code_of_another_app_is_invalid(client: Client, sim: Simulator) -> None:
    code = sim.mint_code(OA, "alice")
    assert errcode(exchange(client, sim, code, WEB)) == 40029
    assert errcode(exchange(client, sim, code, OA)) == 0


@pytest.mark.parametrize(("app_id", "ttl"), [(WEB, 600), (OA, 300)])
def test_code_expiry(
    client: Client, sim: Simulator, clock: FakeClock, app_id: str, ttl: int
) -> None:
    fresh, stale = sim.mint_code(app_id, "alice"), sim.mint_code(app_id, "alice")
    clock.now += ttl - 1
    assert errcode(exchange(client, sim, fresh, app_id)) == 0
    clock.now += 1
    assert errcode(exchange(client, sim, stale, app_id)) == 42003


def test_concurrent_exchanges_of_one_code_succeed_once(client: Client, sim: Simulator) -> None:
    code = sim.mint_code(WEB, "alice")
    results: list[int] = []

    def run() -> None:
        results.append(errcode(exchange(Client(sim), sim, code)))

    threads = [threading.Thread(target=run) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0] + [40163] * 15


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_text_survives_the_wire_for_a_lenient_parser(text: str) -> None:
    raw = wire.encode({"nickname": text, "list": [text]})
    assert json.loads(raw.decode("utf-8"), strict=False) == {"nickname": text, "list": [text]}
    assert b"\\u" not in raw.replace(b"\\\\", b"")


def test_half_an_emoji_goes_out_escaped_as_wechat_sends_it() -> None:
    raw = wire.encode({"nickname": "half \ud83d emoji", "city": "\udc00"})
    assert raw == b'{"nickname":"half \\ud83d emoji","city":"\\udc00"}'
    assert json.loads(raw) == {"nickname": "half \ud83d emoji", "city": "\udc00"}


# --- identities ---------------------------------------------------------------------------


def test_openids_are_per_app_and_stable(client: Client, sim: Simulator) -> None:
    web, oa = tokens(client, sim, "alice", WEB), tokens(client, sim, "alice", OA)
    assert web["openid"] != oa["openid"]
    assert web["unionid"] == oa["unionid"] == sim.unionid("alice")
    for openid in (web["openid"], oa["openid"]):
        assert isinstance(openid, str) and len(openid) == 28 and openid.startswith("o")
    assert Simulator.default().openid(WEB, "alice") == web["openid"]
    assert sim.openid(WEB, "bob") != web["openid"]


def test_unbound_app_sends_no_unionid() -> None:
    sim = Simulator(
        [SimApp("wxaaaaaaaaaaaaaaaa", "s" * 32, "website", unionid_bound=False)],
        [SimUser("alice", "Alice", "https://thirdwx.qlogo.cn/mmopen/vi_32/a/132")],
    )
    client = Client(sim)
    code = sim.mint_code("wxaaaaaaaaaaaaaaaa", "alice")
    t = body(exchange(client, sim, code, "wxaaaaaaaaaaaaaaaa"))
    assert "unionid" not in t
    info = api(
        client, "/sns/userinfo", access_token=str(t["access_token"]), openid=str(t["openid"])
    )
    assert "unionid" not in body(info)


def test_snapshot_user(client: Client, sim: Simulator) -> None:
    t = tokens(client, sim, "snapshot", OA, scope="snsapi_base")
    assert t["is_snapshotuser"] == 1
    assert "unionid" not in t
    assert b'"is_snapshotuser":1' in exchange(client, sim, sim.mint_code(OA, "snapshot"), OA).data


def test_simulator_rejects_duplicate_keys() -> None:
    user = SimUser("alice", "A", "")
    with pytest.raises(ValueError, match="unique"):
        Simulator([], [user, user])


# --- refresh, auth, userinfo --------------------------------------------------------------


def test_refresh_keeps_the_refresh_token(client: Client, sim: Simulator, clock: FakeClock) -> None:
    t = tokens(client, sim, "alice")
    clock.now += 7201
    resp = api(
        client,
        "/sns/oauth2/refresh_token",
        appid=WEB,
        grant_type="refresh_token",
        refresh_token=str(t["refresh_token"]),
    )
    fresh = body(resp)
    assert fresh["refresh_token"] == t["refresh_token"]
    assert fresh["access_token"] != t["access_token"]
    assert fresh["openid"] == t["openid"] and fresh["unionid"] == t["unionid"]
    assert fresh["expires_in"] == 7200


def refresh(client: Client, refresh_token: str, app_id: str = WEB) -> int:
    return errcode(
        api(
            client,
            "/sns/oauth2/refresh_token",
            appid=app_id,
            grant_type="refresh_token",
            refresh_token=refresh_token,
        )
    )


def test_refresh_errors(client: Client, sim: Simulator, clock: FakeClock) -> None:
    t = tokens(client, sim, "alice")
    rt = str(t["refresh_token"])
    assert refresh(client, "unknown") == 40030
    assert refresh(client, rt, OA) == 40030
    assert refresh(client, "") == 41003
    assert errcode(api(client, "/sns/oauth2/refresh_token", appid=WEB, refresh_token=rt)) == 40002
    clock.now += 30 * 86400 - 1
    assert refresh(client, rt) == 0
    clock.now += 1
    assert refresh(client, rt) == 42002


def auth(client: Client, access_token: str, openid: str) -> int:
    resp = api(client, "/sns/auth", access_token=access_token, openid=openid)
    assert resp.headers["Content-Type"] == "text/plain"
    return errcode(resp)


def test_auth(client: Client, sim: Simulator, clock: FakeClock) -> None:
    t = tokens(client, sim, "alice")
    at, openid = str(t["access_token"]), str(t["openid"])
    resp = api(client, "/sns/auth", access_token=at, openid=openid)
    assert resp.data == b'{"errcode":0,"errmsg":"ok"}'
    assert auth(client, "", openid) == 41001
    assert auth(client, "bogus", openid) == 40001
    assert auth(client, at, "") == 41009
    assert auth(client, at, sim.openid(OA, "alice")) == 40003
    clock.now += 7200
    assert auth(client, at, openid) == 42001


def test_revoke(client: Client, sim: Simulator) -> None:
    alice, bob = tokens(client, sim, "alice"), tokens(client, sim, "bob")
    resp = client.post("/_sim/revoke", json={"user": "alice"})
    assert resp.status_code == 200
    assert refresh(client, str(alice["refresh_token"])) == 42007
    assert auth(client, str(alice["access_token"]), str(alice["openid"])) == 42001
    assert auth(client, str(bob["access_token"]), str(bob["openid"])) == 0
    assert tokens(client, sim, "alice")["openid"] == alice["openid"]
    assert client.post("/_sim/revoke", json={"user": "nobody"}).status_code == 400


def test_userinfo_needs_a_profile_scope(client: Client, sim: Simulator) -> None:
    base = tokens(client, sim, "alice", OA, scope="snsapi_base")
    assert base["scope"] == "snsapi_base"
    at, openid = str(base["access_token"]), str(base["openid"])
    assert errcode(api(client, "/sns/userinfo", access_token=at, openid=openid)) == 48001
    assert auth(client, at, openid) == 0
    full = tokens(client, sim, "alice", OA, scope="snsapi_userinfo")
    info = api(client, "/sns/userinfo", access_token=str(full["access_token"]), openid=openid)
    assert body(info)["nickname"] == "Alice"
    assert errcode(api(client, "/sns/userinfo", access_token="bogus", openid=openid)) == 40001


# --- QR login pages -----------------------------------------------------------------------


def qrconnect(client: Client, **overrides: str) -> TestResponse:
    params = {
        "appid": WEB,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "snsapi_login",
        "state": "abc123",
        "lang": "en",
        **overrides,
    }
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return client.get(f"/connect/qrconnect?{query}")


def scan_links(page: str) -> dict[str, str]:
    links = re.findall(r'href="(/connect/scan/[^"?]+\?(?:user=[^"]+|cancel=1))"', page)
    return {parse_qs(urlsplit(link).query).get("user", ["cancel"])[0]: link for link in links}


def test_qr_page_shows_a_real_qr_code_and_test_identities(client: Client) -> None:
    resp = qrconnect(client)
    assert resp.status_code == 200
    page = resp.text
    confirm = re.search(r'href="(http://localhost/connect/confirm/[^"]+)"', page)
    assert confirm is not None
    assert (
        segno.make(confirm.group(1), error="m").svg_inline(scale=4, border=4, omitsize=True) in page
    )
    links = scan_links(page)
    assert set(links) == {"alice", "zhangsan", "bob", "cancel"}
    # Control characters in a nickname show as what they are, not as U+FFFD or nothing.
    assert "Bob &quot;\\o/&quot;\\r\\nX-WeChat-OpenID: forged" in page
    assert "张三\\x14🚀" in page
    assert "<script>" in page and "https://" not in page.split("<main>")[0]


def test_scan_redirects_with_a_code_once(client: Client, sim: Simulator) -> None:
    links = scan_links(qrconnect(client, redirect_uri=CALLBACK + "?next=%2Fa").text)
    resp = client.get(links["alice"])
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?next=%2Fa&code=")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["abc123"]
    assert errcode(exchange(client, sim, query["code"][0])) == 0
    assert client.get(links["alice"]).status_code == 410


def test_qrconnect_with_sim_user_redirects_at_once(client: Client, sim: Simulator) -> None:
    resp = qrconnect(client, sim_user="zhangsan")
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert body(exchange(client, sim, query["code"][0]))["openid"] == sim.openid(WEB, "zhangsan")


def test_cancel_redirects_with_state_only(client: Client) -> None:
    resp = client.get(scan_links(qrconnect(client).text)["cancel"])
    assert resp.status_code == 302
    assert resp.headers["Location"] == CALLBACK + "?state=abc123"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"appid": "wx0000000000000000"}, "invalid appid"),
        ({"appid": OA}, "invalid scope"),
        ({"scope": "snsapi_userinfo"}, "invalid scope"),
        ({"response_type": "token"}, "invalid response_type"),
        ({"redirect_uri": ""}, "redirect_uri missing"),
        ({"redirect_uri": "javascript:alert(1)"}, "absolute http(s) URL"),
        ({"state": "a-b"}, "state"),
        ({"state": "a" * 129}, "state"),
    ],
)
def test_qrconnect_refuses_bad_requests_without_redirecting(
    client: Client, overrides: dict[str, str], message: str
) -> None:
    resp = qrconnect(client, **overrides)
    assert resp.status_code == 200
    assert "Location" not in resp.headers
    assert 'id="error"' in resp.text and message in resp.text
    assert "/connect/scan/" not in resp.text


def test_callback_domain_is_enforced() -> None:
    app = SimApp("wxbbbbbbbbbbbbbbbb", "s" * 32, "website", callback_domain="intranet.example.com")
    client = Client(Simulator([app], [SimUser("alice", "A", "")]))
    assert "/connect/scan/" in qrconnect(client, appid=app.app_id).text
    other = qrconnect(client, appid=app.app_id, redirect_uri="https://evil.example/cb")
    assert "callback domain" in other.text and "/connect/scan/" not in other.text


def test_phone_confirmation_is_seen_by_polling(client: Client, sim: Simulator) -> None:
    page = qrconnect(client).text
    confirm = re.search(r'href="http://localhost(/connect/confirm/([^"]+))"', page)
    assert confirm is not None
    path, ticket = confirm.groups()
    assert client.get(f"/connect/poll/{ticket}").json == {"status": "waiting", "redirect": None}
    phone = client.get(path)
    assert phone.status_code == 200 and 'name="user" value="zhangsan"' in phone.text
    assert 'value="snapshot"' not in phone.text
    assert client.get(f"/connect/poll/{ticket}").json == {"status": "scanned", "redirect": None}
    assert client.post(path, data={"user": "zhangsan"}).status_code == 200
    polled = client.get(f"/connect/poll/{ticket}").json
    assert polled is not None and polled["status"] == "confirmed"
    code = parse_qs(urlsplit(polled["redirect"]).query)["code"][0]
    assert body(exchange(client, sim, code))["openid"] == sim.openid(WEB, "zhangsan")
    assert client.post(path, data={"user": "alice"}).status_code == 410


def test_phone_decline_and_ticket_expiry(client: Client, clock: FakeClock) -> None:
    declined = re.search(r"/connect/confirm/([^\"]+)", qrconnect(client).text)
    expiring = re.search(r"/connect/confirm/([^\"]+)", qrconnect(client).text)
    assert declined is not None and expiring is not None
    client.post(f"/connect/confirm/{declined.group(1)}", data={"cancel": "1"})
    polled = client.get(f"/connect/poll/{declined.group(1)}").json
    assert polled == {"status": "cancelled", "redirect": CALLBACK + "?state=abc123"}
    clock.now += 301
    assert client.get(f"/connect/poll/{expiring.group(1)}").json == {
        "status": "expired",
        "redirect": None,
    }
    assert client.get(f"/connect/confirm/{expiring.group(1)}").status_code == 410


# --- in-WeChat authorize ------------------------------------------------------------------


def authorize(client: Client, query: str) -> TestResponse:
    return client.get(f"/connect/oauth2/authorize?{query}")


OA_QUERY = (
    f"appid={OA}&redirect_uri={quote(CALLBACK, safe='')}&response_type=code"
    "&scope=snsapi_base&state=xyz"
)


def test_authorize_with_sim_user_redirects_at_once(client: Client, sim: Simulator) -> None:
    resp = authorize(client, OA_QUERY + "&sim_user=alice")
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["state"] == ["xyz"]
    t = body(exchange(client, sim, query["code"][0], OA))
    assert t["openid"] == sim.openid(OA, "alice") and t["scope"] == "snsapi_base"


def test_authorize_without_sim_user_shows_a_chooser(client: Client) -> None:
    page = authorize(client, OA_QUERY).text
    links = scan_links(page)
    assert set(links) == {"alice", "zhangsan", "bob", "snapshot"}
    assert client.get(links["snapshot"]).status_code == 302


def test_userinfo_consent_page_can_decline(client: Client) -> None:
    page = authorize(client, OA_QUERY.replace("snsapi_base", "snsapi_userinfo")).text
    assert "Allow as Alice" in page
    resp = client.get(scan_links(page)["cancel"])
    assert resp.headers["Location"] == CALLBACK + "?state=xyz"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (OA_QUERY.replace(OA, WEB), "10016"),
        (OA_QUERY.replace(f"appid={OA}", "appid="), "10012"),
        (
            f"redirect_uri={quote(CALLBACK, safe='')}&appid={OA}&response_type=code"
            "&scope=snsapi_base&state=xyz",
            "order",
        ),
        (OA_QUERY.replace("&state=xyz", "") + "&state=xyz&state=abc", "order"),
        (OA_QUERY.replace("snsapi_base", "snsapi_login"), "10005"),
        (OA_QUERY.replace("scope=snsapi_base", "scope="), "10010"),
        (OA_QUERY.replace("state=xyz", "state=x%2Dy"), "state"),
        (OA_QUERY.replace(quote(CALLBACK, safe=""), ""), "10011"),
    ],
)
def test_authorize_refuses(client: Client, query: str, message: str) -> None:
    resp = authorize(client, query)
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert message in resp.text


def test_authorize_allows_an_empty_state(client: Client) -> None:
    resp = authorize(client, OA_QUERY.replace("state=xyz", "state=") + "&sim_user=bob")
    assert resp.status_code == 302
    assert parse_qs(urlsplit(resp.headers["Location"]).query, keep_blank_values=True)["state"] == [
        ""
    ]


# --- faults and the control API -----------------------------------------------------------


def test_errcode_fault_does_not_spend_the_code(client: Client, sim: Simulator) -> None:
    code = sim.mint_code(WEB, "alice")
    resp = client.post(
        "/_sim/faults",
        json={"endpoint": "access_token", "mode": "errcode", "errcode": -1, "times": 2},
    )
    assert resp.status_code == 200
    first, second = exchange(client, sim, code), exchange(client, sim, code)
    assert re.fullmatch(rb'\{"errcode":-1,"errmsg":"system error, rid: [-0-9a-f]+"\}', first.data)
    assert errcode(second) == -1
    assert errcode(exchange(client, sim, code)) == 0


def test_http_status_and_garbage_faults(client: Client, sim: Simulator) -> None:
    sim.add_fault(Fault("*", "http_status", status=503))
    sim.add_fault(Fault("auth", "garbage"))
    sim.add_fault(Fault("auth", "garbage", body="[]"))
    failed = api(client, "/sns/userinfo")
    assert failed.status_code == 503 and failed.data.startswith(b"<html>")
    garbage = api(client, "/sns/auth")
    assert garbage.status_code == 200 and b"502 Bad Gateway" in garbage.data
    assert api(client, "/sns/auth").data == b"[]"
    assert errcode(api(client, "/sns/auth")) == 41001


def test_delay_fault_answers_late(client: Client, sim: Simulator) -> None:
    sim.add_fault(Fault("auth", "delay", delay=0.05))
    started = time.monotonic()
    assert errcode(api(client, "/sns/auth")) == 41001
    assert time.monotonic() - started >= 0.05


def test_fault_listing_clearing_and_validation(client: Client) -> None:
    client.post("/_sim/faults", json={"endpoint": "*", "mode": "garbage", "times": 3})
    listed = client.get("/_sim/faults").json
    assert listed is not None and listed["faults"][0]["times"] == 3
    client.delete("/_sim/faults")
    assert client.get("/_sim/faults").json == {"faults": []}
    bad_bodies: list[object] = [
        {"endpoint": "token", "mode": "garbage"},
        {"endpoint": "auth", "mode": "explode"},
        {"endpoint": "auth", "mode": "errcode", "times": 0},
        {"endpoint": "auth", "mode": "delay", "delay": -1},
        {"endpoint": "auth", "mode": "errcode", "errcode": "40029"},
        {"endpoint": "auth", "mode": "garbage", "body": 42},
        {"endpoint": "auth"},
        [],
    ]
    for bad in bad_bodies:
        resp = client.post("/_sim/faults", json=bad)
        assert resp.status_code == 400 and "error" in (resp.json or {})


def test_call_log_redacts_secrets(client: Client, sim: Simulator) -> None:
    code = sim.mint_code(WEB, "alice")
    exchange(client, sim, code)
    exchange(client, sim, code)
    api(client, "/sns/auth", access_token="T0KEN", openid="oPENID")
    calls = client.get("/_sim/calls?endpoint=access_token").json
    assert calls is not None
    assert [c["outcome"] for c in calls["calls"]] == [0, 40163]
    assert calls["calls"][0]["params"] == {
        "appid": WEB,
        "secret": "<redacted>",
        "code": "<redacted>",
        "grant_type": "authorization_code",
    }
    everything = json.dumps(client.get("/_sim/calls").json)
    assert code not in everything and secret_of(sim, WEB) not in everything
    assert "T0KEN" not in everything and "oPENID" in everything
    client.delete("/_sim/calls")
    assert sim.calls() == []


def test_control_code_clock_users_reset(client: Client, sim: Simulator) -> None:
    minted = client.post("/_sim/code", json={"app_id": OA, "user": "bob", "scope": "snsapi_base"})
    assert minted.json is not None
    assert minted.json["openid"] == sim.openid(OA, "bob")
    assert minted.json["unionid"] == sim.unionid("bob")
    code = minted.json["code"]
    assert client.post("/_sim/code", json={"user": "nobody"}).status_code == 400
    assert (
        client.post(
            "/_sim/code", json={"app_id": WEB, "user": "bob", "scope": "snsapi_base"}
        ).status_code
        == 400
    )
    assert client.post("/_sim/clock", json={"advance": "soon"}).status_code == 400
    assert client.post("/_sim/clock", json={"advance": 301}).status_code == 200
    assert errcode(exchange(client, sim, code, OA)) == 42003
    users = client.get("/_sim/users").json
    assert users is not None
    alice = next(u for u in users["users"] if u["key"] == "alice")
    assert alice["openids"] == {WEB: sim.openid(WEB, "alice"), OA: sim.openid(OA, "alice")}
    assert {a["kind"] for a in users["apps"]} == {"website", "official_account"}
    client.post("/_sim/reset")
    assert sim.calls() == []
    fresh = sim.mint_code(OA, "bob")
    assert errcode(exchange(client, sim, fresh, OA)) == 0


def test_index_and_unknown_paths(client: Client) -> None:
    index = client.get("/")
    assert index.status_code == 200 and WEB in index.text
    assert client.get("/sns/nothing").status_code == 404
    assert client.delete("/_sim/revoke").status_code == 405
