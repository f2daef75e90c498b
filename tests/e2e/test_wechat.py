"""The WeChat API client against the simulator on a real loopback socket."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.providers.wechat.client import (
    AccessTokenInvalid,
    AppCredentialsInvalid,
    AuthorizationGone,
    CodeInvalid,
    OpenIDInvalid,
    Profile,
    QuotaExceeded,
    ScopeUnauthorized,
    SystemBusy,
    UnknownAPIError,
    WeChatAPIError,
    WeChatClient,
    WeChatError,
    WeChatProtocolError,
    WeChatTimeout,
    WeChatUnavailable,
)
from gateway.simulator import Fault, Simulator, SimulatorServer
from tests.helpers.e2e import HttpBrowser, location, state_of
from tests.helpers.support import GatewayProcess, base_config, free_port

SIM = Simulator.default()
WEB = SIM.app_of_kind("website")
OA = SIM.app_of_kind("official_account")
CALLBACK = "https://intranet.example.com/_gateway/callback"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(SIM) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer) -> Iterator[Simulator]:
    SIM.reset()
    yield SIM
    SIM.reset()


MakeClient = Callable[..., WeChatClient]


@pytest.fixture
def make_client(server: SimulatorServer, sim: Simulator) -> Iterator[MakeClient]:
    made: list[WeChatClient] = []

    def make(app_id: str = WEB.app_id, app_secret: str = WEB.app_secret, **kw: Any) -> WeChatClient:
        options: dict[str, Any] = {"api_base": server.url, "open_base": server.url, "timeout": 0.3}
        client = WeChatClient(app_id, app_secret, **(options | kw))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> WeChatClient:
    return make_client()


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- URL builders -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["", "a" * 129, "a-b", "ab=c", "状态"])
def test_urls_refuse_bad_state(client: WeChatClient, state: str) -> None:
    with pytest.raises(ValueError, match="state"):
        client.qrconnect_url(CALLBACK, state)
    with pytest.raises(ValueError, match="state"):
        client.oauth2_authorize_url(CALLBACK, state, "snsapi_base")


def test_urls_refuse_bad_scope_redirect_uri_and_lang(client: WeChatClient) -> None:
    with pytest.raises(ValueError, match="scope"):
        client.oauth2_authorize_url(CALLBACK, "abc", "snsapi_login")
    with pytest.raises(ValueError, match="redirect_uri"):
        client.qrconnect_url("/_gateway/callback", "abc")
    with pytest.raises(ValueError, match="lang"):
        WeChatClient("wx", "s", api_base="x", open_base="x", timeout=1, lang="zh")
    with pytest.raises(ValueError, match="lang"):
        client.userinfo("t", "o", lang="fr")


def test_the_simulator_accepts_the_urls_we_build(make_client: MakeClient, sim: Simulator) -> None:
    web = make_client()
    page = requests.get(web.qrconnect_url(CALLBACK, "s1"), timeout=5)
    assert "/connect/scan/" in page.text
    oa = make_client(OA.app_id, OA.app_secret)
    url = oa.oauth2_authorize_url(CALLBACK, "s2", "snsapi_base").replace(
        "#wechat_redirect", "&sim_user=alice"
    )
    resp = requests.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
    assert oa.exchange_code(code).openid == sim.openid(OA.app_id, "alice")


# --- success ------------------------------------------------------------------------------


def test_full_flow_decodes_cjk_emoji_and_keeps_controls(
    client: WeChatClient, sim: Simulator
) -> None:
    token = client.exchange_code(sim.mint_code(WEB.app_id, "zhangsan"))
    assert token.openid == sim.openid(WEB.app_id, "zhangsan")
    assert token.unionid == sim.unionid("zhangsan")
    assert token.expires_in == 7200 and token.scope == "snsapi_login"
    assert token.is_snapshotuser is False
    client.check_auth(token.access_token, token.openid)
    profile = client.userinfo(token.access_token, token.openid)
    assert profile.nickname == "张三\x14🚀"
    assert profile.avatar.startswith("https://thirdwx.qlogo.cn/mmopen/vi_32/")
    assert profile.unionid == token.unionid
    refreshed = client.refresh(token.refresh_token)
    assert refreshed.refresh_token == token.refresh_token
    assert refreshed.access_token != token.access_token
    client.check_auth(refreshed.access_token, token.openid)


def test_crlf_nickname_is_preserved(client: WeChatClient, sim: Simulator) -> None:
    token = client.exchange_code(sim.mint_code(WEB.app_id, "bob"))
    assert client.userinfo(token.access_token, token.openid).nickname == (
        'Bob "\\o/"\r\nX-WeChat-OpenID: forged'
    )


def test_snapshot_user_is_flagged(make_client: MakeClient, sim: Simulator) -> None:
    oa = make_client(OA.app_id, OA.app_secret)
    token = oa.exchange_code(sim.mint_code(OA.app_id, "snapshot", "snsapi_base"))
    assert token.is_snapshotuser is True
    assert token.unionid is None


def test_reprs_hide_tokens(client: WeChatClient, sim: Simulator) -> None:
    token = client.exchange_code(sim.mint_code(WEB.app_id, "alice"))
    shown = repr(token)
    assert token.openid in shown
    assert token.access_token not in shown and token.refresh_token not in shown
    assert WEB.app_secret not in repr(client)


def test_environment_proxies_are_ignored(
    client: WeChatClient, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert client.exchange_code(sim.mint_code(WEB.app_id, "alice")).openid


class _KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    """Answers /sns/auth like WeChat, keeping connections open (Werkzeug's server closes)."""

    protocol_version = "HTTP/1.1"
    peers: ClassVar[set[tuple[str, int]]] = set()

    def do_GET(self) -> None:
        self.peers.add(self.client_address)
        body = b'{"errcode":0,"errmsg":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_connections_are_reused() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = WeChatClient(
            "wx",
            "secret",
            api_base=f"http://127.0.0.1:{server.server_port}",
            open_base="https://open.weixin.qq.com",
            timeout=2,
        )
        for _ in range(5):
            client.check_auth("token", "openid")
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert len(_KeepAliveHandler.peers) == 1


# --- WeChat's errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errcode", "kind", "config"),
    [
        (-1, SystemBusy, False),
        (45011, QuotaExceeded, False),
        (40029, CodeInvalid, False),
        (40163, CodeInvalid, False),
        (42003, CodeInvalid, False),
        (40030, AuthorizationGone, False),
        (42002, AuthorizationGone, False),
        (42007, AuthorizationGone, False),
        (40001, AccessTokenInvalid, False),
        (40014, AccessTokenInvalid, False),
        (42001, AccessTokenInvalid, False),
        (40003, OpenIDInvalid, False),
        (41009, OpenIDInvalid, False),
        (40013, AppCredentialsInvalid, True),
        (40125, AppCredentialsInvalid, True),
        (41002, AppCredentialsInvalid, True),
        (41004, AppCredentialsInvalid, True),
        (48001, ScopeUnauthorized, True),
        (50001, ScopeUnauthorized, True),
        (99999, UnknownAPIError, False),
    ],
)
def test_errcode_picks_the_class(
    client: WeChatClient,
    sim: Simulator,
    errcode: int,
    kind: type[WeChatAPIError],
    config: bool,
) -> None:
    sim.add_fault(Fault("auth", "errcode", errcode=errcode, times=20))
    with pytest.raises(kind) as caught:
        client.check_auth("token", "openid")
    exc = caught.value
    assert exc.errcode == errcode and exc.is_config_error is config
    # Which call, what happened and what to do about it.
    assert re.fullmatch(rf"WeChat auth call failed: errcode {errcode} \(.+\); .+", str(exc))
    assert exc.rid is not None and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}", exc.rid)
    assert "rid" not in exc.errmsg


def test_wrong_secret_says_which_key_to_fix(
    make_client: MakeClient, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(app_secret="0" * 32)
    with pytest.raises(AppCredentialsInvalid) as caught:
        client.exchange_code(sim.mint_code(WEB.app_id, "alice"))
    assert caught.value.errcode == 40125
    assert str(caught.value).endswith("; wechat.app_secret is wrong")
    records = [r for r in caplog.records if r.name == "gateway.wechat"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "40125" in message and "invalid app secret" in message
    assert "wechat.app_secret is wrong" in message


def test_wrong_app_id_and_oa_key_path(make_client: MakeClient, sim: Simulator) -> None:
    with pytest.raises(AppCredentialsInvalid, match=r"wechat\.app_id is wrong"):
        make_client(app_id="wx0000000000000000").exchange_code("code")
    oa = make_client(OA.app_id, OA.app_secret, config_key="wechat.official_account")
    token = oa.exchange_code(sim.mint_code(OA.app_id, "alice", "snsapi_base"))
    with pytest.raises(ScopeUnauthorized) as caught:
        oa.userinfo(token.access_token, token.openid)
    assert caught.value.errcode == 48001
    assert "; the app lacks permission for this scope" in str(caught.value)
    assert "wechat.official_account.scope" in str(caught.value)


def test_real_error_paths(client: WeChatClient, sim: Simulator) -> None:
    code = sim.mint_code(WEB.app_id, "alice")
    token = client.exchange_code(code)
    with pytest.raises(CodeInvalid, match="40163"):
        client.exchange_code(code)
    with pytest.raises(CodeInvalid, match="40029"):
        client.exchange_code("not-a-code")
    with pytest.raises(OpenIDInvalid, match="40003"):
        client.check_auth(token.access_token, sim.openid(OA.app_id, "alice"))
    with pytest.raises(AuthorizationGone, match="40030"):
        client.refresh("not-a-token")
    sim.revoke("alice")
    with pytest.raises(AuthorizationGone, match="42007"):
        client.refresh(token.refresh_token)
    with pytest.raises(AccessTokenInvalid, match="42001"):
        client.check_auth(token.access_token, token.openid)


# --- retries and the time budget ----------------------------------------------------------


def test_busy_is_retried_within_budget(make_client: MakeClient, sim: Simulator) -> None:
    fake = FakeTime()
    client = make_client(budget=2.0, sleep=fake.sleep, monotonic=fake.monotonic)
    sim.add_fault(Fault("access_token", "errcode", errcode=-1, times=2))
    token = client.exchange_code(sim.mint_code(WEB.app_id, "alice"))
    assert token.openid == sim.openid(WEB.app_id, "alice")
    assert fake.sleeps == [0.2, 0.4]
    assert [c.outcome for c in sim.calls("access_token")] == [-1, -1, 0]


def test_the_minute_quota_is_not_retried(make_client: MakeClient, sim: Simulator) -> None:
    """45011 lasts until the next minute; a retry now only spends more of the quota."""
    fake = FakeTime()
    client = make_client(budget=2.0, sleep=fake.sleep, monotonic=fake.monotonic)
    sim.add_fault(Fault("access_token", "errcode", errcode=45011, times=1))
    with pytest.raises(QuotaExceeded):
        client.exchange_code(sim.mint_code(WEB.app_id, "alice"))
    assert fake.sleeps == []
    assert [c.outcome for c in sim.calls("access_token")] == [45011]


def test_retries_stop_when_the_budget_is_spent(make_client: MakeClient, sim: Simulator) -> None:
    fake = FakeTime()
    client = make_client(budget=1.0, sleep=fake.sleep, monotonic=fake.monotonic)
    sim.add_fault(Fault("userinfo", "errcode", errcode=-1, times=50))
    with pytest.raises(SystemBusy):
        client.userinfo("token", "openid")
    assert fake.sleeps == [0.2, 0.4]
    assert len(sim.calls("userinfo")) == 3


def test_budget_bounds_real_time(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client(timeout=0.3)
    sim.add_fault(Fault("auth", "errcode", errcode=45011, times=50))
    started = time.monotonic()
    with pytest.raises(QuotaExceeded):
        client.check_auth("token", "openid")
    assert time.monotonic() - started < 0.3
    assert len(sim.calls("auth")) == 1


def test_exchange_is_never_retried_after_a_timeout(make_client: MakeClient, sim: Simulator) -> None:
    client = make_client(timeout=0.3, budget=5.0)
    code = sim.mint_code(WEB.app_id, "alice")
    sim.add_fault(Fault("access_token", "delay", delay=1.0))
    started = time.monotonic()
    with pytest.raises(WeChatTimeout):
        client.exchange_code(code)
    assert time.monotonic() - started < 0.9
    assert len(sim.calls("access_token")) == 1
    # Why: the slow call did reach WeChat and spent the code.
    with pytest.raises(CodeInvalid, match="40163"):
        client.exchange_code(code)


def test_a_timeout_is_not_retried_for_other_calls_either(
    make_client: MakeClient, sim: Simulator
) -> None:
    client = make_client(timeout=0.2, budget=5.0)
    sim.add_fault(Fault("refresh_token", "delay", delay=0.6))
    with pytest.raises(WeChatTimeout):
        client.refresh("anything")
    assert len(sim.calls("refresh_token")) == 1


# --- broken replies and transport ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "not a JSON object"),
        ("", "not a JSON object"),
        ("[]", "not a JSON object"),
        ('{"openid":"o"}', "access_token is missing"),
        (
            '{"access_token":"a","expires_in":"soon","refresh_token":"r","openid":"o","scope":"s"}',
            "expires_in",
        ),
        ('{"errcode":"oops"}', "errcode is not a number"),
        ("x" * 70_000, "larger than"),
    ],
)
def test_garbage_is_a_protocol_error(
    client: WeChatClient, sim: Simulator, body: str | None, reason: str
) -> None:
    sim.add_fault(Fault("access_token", "garbage", body=body))
    with pytest.raises(WeChatProtocolError, match=reason):
        client.exchange_code("code")
    assert len(sim.calls("access_token")) == 1


def test_errcode_as_a_string_is_still_an_errcode(client: WeChatClient, sim: Simulator) -> None:
    sim.add_fault(Fault("auth", "garbage", body='{"errcode":"40001","errmsg":"x"}'))
    with pytest.raises(AccessTokenInvalid):
        client.check_auth("token", "openid")


def test_userinfo_for_another_openid_is_refused(client: WeChatClient, sim: Simulator) -> None:
    sim.add_fault(
        Fault("userinfo", "garbage", body='{"openid":"other","nickname":"x","headimgurl":""}')
    )
    with pytest.raises(WeChatProtocolError, match="different openid"):
        client.userinfo("token", "mine")


def test_userinfo_fields_the_gateway_never_reads_are_not_checked(
    client: WeChatClient, sim: Simulator
) -> None:
    body = {
        "openid": "mine",
        "nickname": "x",
        "headimgurl": "https://thirdwx.qlogo.cn/a.png",
        "unionid": "u",
        "sex": "x",
        "province": 1,
        "city": None,
        "country": ["CN"],
        "privilege": 5,
    }
    sim.add_fault(Fault("userinfo", "garbage", body=json.dumps(body)))
    assert client.userinfo("token", "mine") == Profile(
        openid="mine", nickname="x", avatar="https://thirdwx.qlogo.cn/a.png", unionid="u"
    )


@pytest.mark.parametrize("field", ["openid", "nickname", "headimgurl", "unionid"])
def test_userinfo_fields_the_gateway_reads_must_be_strings(
    client: WeChatClient, sim: Simulator, field: str
) -> None:
    body = {"openid": "mine", "nickname": "x", "headimgurl": "", field: 5}
    sim.add_fault(Fault("userinfo", "garbage", body=json.dumps(body)))
    with pytest.raises(WeChatProtocolError, match=f"{field} is not a string"):
        client.userinfo("token", "mine")


@pytest.mark.parametrize("status", [500, 503, 302])
def test_http_error_status_is_a_protocol_error(
    client: WeChatClient, sim: Simulator, status: int
) -> None:
    sim.add_fault(Fault("userinfo", "http_status", status=status))
    with pytest.raises(WeChatProtocolError, match=f"HTTP status {status}"):
        client.userinfo("token", "openid")
    assert len(sim.calls("userinfo")) == 1


def test_reset_connection_is_unavailable(client: WeChatClient, sim: Simulator) -> None:
    sim.add_fault(Fault("auth", "reset"))
    with pytest.raises(WeChatUnavailable, match="connection closed without a reply"):
        client.check_auth("token", "openid")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_refused_is_unavailable(closed_port: int) -> None:
    client = WeChatClient(
        "wx",
        "secret",
        api_base=f"http://127.0.0.1:{closed_port}",
        open_base="https://open.weixin.qq.com",
        timeout=0.3,
    )
    with pytest.raises(WeChatUnavailable, match="connection refused"):
        client.check_auth("token", "openid")


# --- secrets stay out of messages and logs ------------------------------------------------


def provoke(
    kind: str, client: WeChatClient, refused: WeChatClient, sim: Simulator, code: str, token: str
) -> WeChatError:
    """Run one failing call that carried ``code`` or ``token`` and return its exception."""
    calls: dict[str, tuple[Fault | None, Callable[[], object]]] = {
        "api_error": (
            Fault("access_token", "errcode", errcode=40163),
            lambda: client.exchange_code(code),
        ),
        "echoing_errmsg": (
            Fault(
                "access_token",
                "garbage",
                body=f'{{"errcode":40029,"errmsg":"invalid code {code} secret {WEB.app_secret}"}}',
            ),
            lambda: client.exchange_code(code),
        ),
        "timeout": (Fault("access_token", "delay", delay=0.6), lambda: client.exchange_code(code)),
        "reset": (Fault("refresh_token", "reset"), lambda: client.refresh(token)),
        "garbage": (Fault("userinfo", "garbage"), lambda: client.userinfo(token, "o")),
        "http_status": (Fault("auth", "http_status"), lambda: client.check_auth(token, "o")),
        "busy_exhausted": (
            Fault("refresh_token", "errcode", errcode=-1, times=50),
            lambda: client.refresh(token),
        ),
        "unknown_refresh_token": (None, lambda: client.refresh(token)),
        "refused": (None, lambda: refused.exchange_code(code)),
    }
    fault, call = calls[kind]
    if fault is not None:
        sim.add_fault(fault)
    with pytest.raises(WeChatError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    "kind",
    [
        "api_error",
        "echoing_errmsg",
        "timeout",
        "reset",
        "garbage",
        "http_status",
        "busy_exhausted",
        "unknown_refresh_token",
        "refused",
    ],
)
def test_secrets_never_leak(
    make_client: MakeClient,
    sim: Simulator,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(budget=0.5)
    refused = make_client(api_base=f"http://127.0.0.1:{closed_port}")
    code = sim.mint_code(WEB.app_id, "alice")
    token = "RefreshOrAccessToken0123456789"
    exc = provoke(kind, client, refused, sim, code, token)
    texts = [
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(exc)),
        repr(exc.__context__),
        repr(exc.__cause__),
        repr(vars(exc)),
        caplog.text,
    ]
    assert any(r.name == "gateway.wechat" for r in caplog.records)
    for text in texts:
        for secret in (WEB.app_secret, code, token):
            assert secret not in text, (kind, text)


class TricklingWeChat:
    """A WeChat that answers at once, then sends its reply one byte at a time."""

    def __init__(self, *, head_gap: float = 0.0, body_gap: float = 0.1) -> None:
        self.head_gap, self.body_gap = head_gap, body_gap
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        body = (
            b'{"access_token":"T","expires_in":7200,"refresh_token":"R","openid":"o","scope":"s"}'
        )
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.recv(65536)
                for byte in head % len(body):
                    conn.sendall(bytes([byte]))
                    if self.stop.wait(self.head_gap):
                        return
                for byte in body:
                    conn.sendall(bytes([byte]))
                    if self.stop.wait(self.body_gap):
                        return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


def test_a_trickling_reply_ends_within_the_timeout() -> None:
    """requests bounds each socket wait; a body that keeps coming must still end in time."""
    wechat = TricklingWeChat(body_gap=0.05)
    client = WeChatClient(
        WEB.app_id, WEB.app_secret, api_base=wechat.url, open_base=wechat.url, timeout=0.5
    )
    try:
        started = time.monotonic()
        with pytest.raises(WeChatTimeout):
            client.exchange_code("code")
        elapsed = time.monotonic() - started
    finally:
        client.close()
        wechat.close()
    assert elapsed < 0.5 + 0.3, elapsed


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickling_wechat_fails_the_sign_in_within_wechat_timeout(
    tmp_path: Path, where: str
) -> None:
    """Through the real server (gevent): one timer bounds the whole exchange, head too."""
    gaps = {"head_gap": 0.05, "body_gap": 0.0} if where == "head" else {"body_gap": 0.05}
    wechat = TricklingWeChat(**gaps)
    port = free_port()
    config = base_config(
        port,
        "http://127.0.0.1:9",
        wechat={"api_base": wechat.url, "open_base": wechat.url, "timeout": 1},
    )
    try:
        with GatewayProcess(config, tmp_path) as gateway:
            browser = HttpBrowser(gateway.url)
            login = location(browser.get(gateway.url + "/x"))
            state = state_of(location(browser.get(login)))
            started = time.monotonic()
            reply = browser.get(gateway.url + f"/_gateway/callback?code=c0de&state={state}")
            elapsed = time.monotonic() - started
    finally:
        wechat.close()
    assert reply.status_code == 504
    assert elapsed < 1 + 0.6, elapsed
