"""The WeCom API client and its shared access token, against the WeCom simulator (and, for
replies the simulator never sends, a small server of canned replies) on loopback sockets.

Every test also checks that no log record carries a secret, a code or a token that went
over the wire, and that nothing was logged with a traceback.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gateway.auth.session import SessionCodec
from gateway.providers.wecom import (
    AccessTokenInvalid,
    AccessTokens,
    AppMisconfigured,
    CodeInvalid,
    CredentialsInvalid,
    Department,
    DepartmentNotFound,
    ExternalUser,
    MemberNotFound,
    MemberNotVisible,
    RateLimited,
    RequestInvalid,
    SystemBusy,
    UnknownAPIError,
    UserTicketInvalid,
    WeComAPIError,
    WeComClient,
    WeComError,
    WeComProtocolError,
    WeComTimeout,
    WeComUnavailable,
    WeComUser,
)
from gateway.providers.wecom import client as wecom_client
from gateway.simulator.wecom import (
    DEMO_AGENT_ID,
    DEMO_CORP_ID,
    DEMO_LEGACY_AGENT_ID,
    WeComFault,
    WeComSimulator,
    WeComSimulatorServer,
)
from gateway.state.base import StoreUnavailable
from gateway.state.sqlite import SqliteStore

SIM = WeComSimulator.default()
SECRET = SIM.app(DEMO_AGENT_ID).secret
LEGACY_SECRET = SIM.app(DEMO_LEGACY_AGENT_ID).secret
WRONG_SECRET = "wrong-secret-Zq8Xv3Lm0Pt7Rk2Wy5Nb9Cd4Gh6"
CALLBACK = "https://intranet.example.com/_gateway/callback"
SESSION_SECRET = "a-session-secret-of-at-least-32-characters"
HINT = r"hint [0-9]{25}"


# --- fixtures --------------------------------------------------------------------------


class Wire:
    """Every value sent as a secret, code or token, as the client sent it."""

    def __init__(self) -> None:
        self.values: set[str] = {SECRET, LEGACY_SECRET, WRONG_SECRET}
        self.lock = threading.Lock()

    def add(self, params: Any) -> None:
        if not isinstance(params, dict):
            return
        with self.lock:
            for key in ("corpsecret", "code", "access_token"):
                if params.get(key):
                    self.values.add(str(params[key]))

    def leaked_in(self, text: str) -> list[str]:
        with self.lock:
            return [value for value in self.values if value in text]


class RecordingSession(requests.Session):
    """A session set up like the client's own, noting what it sends."""

    def __init__(self, wire: Wire) -> None:
        super().__init__()
        self.trust_env = False
        self.wire = wire

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:
        self.wire.add(kw.get("params"))
        return super().request(method, url, *args, **kw)


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture(autouse=True)
def no_secret_logged(caplog: pytest.LogCaptureFixture, wire: Wire) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage()
        assert not wire.leaked_in(text), f"a secret in a log line: {text!r}"
        assert "access_token=" not in text or "access_token=***" in text, text
        assert record.exc_info is None, f"a traceback was logged: {text!r}"


@pytest.fixture(scope="module")
def server() -> Iterator[WeComSimulatorServer]:
    with WeComSimulatorServer(SIM) as running:
        yield running


@pytest.fixture
def sim(server: WeComSimulatorServer) -> Iterator[WeComSimulator]:
    SIM.reset()
    yield SIM
    SIM.reset()


class Clock:
    """Wall time for the token cache, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db", session_max_age=3600)


@pytest.fixture
def codec() -> SessionCodec:
    return SessionCodec(SESSION_SECRET)


MakeTokens = Callable[..., AccessTokens]
MakeClient = Callable[..., WeComClient]


@pytest.fixture
def make_tokens(store: SqliteStore, codec: SessionCodec, clock: Clock) -> MakeTokens:
    def make(state: Any = None, **kw: Any) -> AccessTokens:
        return AccessTokens(store if state is None else state, codec, clock=clock, **kw)

    return make


@pytest.fixture
def make_client(
    server: WeComSimulatorServer, wire: Wire, make_tokens: MakeTokens
) -> Iterator[MakeClient]:
    made: list[WeComClient] = []

    def make(
        secret: str = SECRET,
        *,
        agent_id: int = DEMO_AGENT_ID,
        tokens: AccessTokens | None = None,
        api_base: str | None = None,
        **kw: Any,
    ) -> WeComClient:
        options: dict[str, Any] = {"timeout": 2.0, "session": RecordingSession(wire)}
        client = WeComClient(
            DEMO_CORP_ID,
            agent_id,
            secret,
            api_base=api_base or server.url,
            tokens=tokens or make_tokens(),
            **(options | kw),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def calls(sim: WeComSimulator, endpoint: Any) -> int:
    return len(sim.calls(endpoint))


def safe(exc: BaseException, wire: Wire) -> BaseException:
    """The exception's text and repr carry no secret, and nothing is chained."""
    for text in (str(exc), repr(exc)):
        assert not wire.leaked_in(text), text
        assert not any(name in text for name in ("corpsecret=", "access_token=", "code=")), text
    assert exc.__cause__ is None
    assert exc.__context__ is None
    return exc


def fail(wire: Wire, kind: type[BaseException], call: Callable[[], Any]) -> Any:
    with pytest.raises(kind) as caught:
        call()
    return safe(caught.value, wire)


# --- identity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "endpoint"), [("auth", "auth_getuserinfo"), ("legacy", "user_getuserinfo")]
)
def test_a_code_names_the_member_with_either_api(
    sim: WeComSimulator, make_client: MakeClient, api: str, endpoint: str
) -> None:
    client = make_client(userinfo_api=api)
    user = client.user_identity(sim.mint_code("zhangsan", CALLBACK))
    assert user == WeComUser("ZhangSan")
    assert user.key == "zhangsan"
    assert calls(sim, endpoint) == 1


@pytest.mark.parametrize("api", ["auth", "legacy"])
def test_a_non_member_is_an_external_user(
    sim: WeComSimulator, make_client: MakeClient, api: str
) -> None:
    user = make_client(userinfo_api=api).user_identity(sim.mint_code("partner", CALLBACK))
    assert isinstance(user, ExternalUser)
    assert user.openid == sim.openid("partner")
    if api == "auth":
        assert user.external_userid == sim.external_userid("partner")


def test_a_privateinfo_code_carries_a_user_ticket_kept_out_of_repr(
    sim: WeComSimulator, make_client: MakeClient
) -> None:
    code = sim.mint_code("ZhangSan", CALLBACK, scope="snsapi_privateinfo")
    user = make_client().user_identity(code)
    assert isinstance(user, WeComUser)
    assert user.user_ticket
    assert user.user_ticket not in repr(user)


def test_a_code_is_spent_once(sim: WeComSimulator, make_client: MakeClient, wire: Wire) -> None:
    client = make_client()
    code = sim.mint_code("ZhangSan", CALLBACK)
    client.user_identity(code)
    exc = fail(wire, CodeInvalid, lambda: client.user_identity(code))
    assert exc.errcode == 40029
    assert not exc.is_config_error


def test_a_code_for_an_untrusted_domain_is_a_config_error(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    code = sim.mint_code("ZhangSan", "https://elsewhere.example.org/cb", agent_id=None)
    exc = fail(wire, AppMisconfigured, lambda: make_client().user_identity(code))
    assert exc.errcode == 50001
    assert exc.is_config_error


# --- members and departments -------------------------------------------------------------


def test_a_member_in_wecom_order_with_the_case_wecom_gave(
    sim: WeComSimulator, make_client: MakeClient
) -> None:
    client = make_client()
    lisi = client.member("LISI")
    assert (lisi.userid, lisi.name, lisi.departments) == ("lisi", "李四\x14🚀", (4, 3))
    assert lisi.status == 1
    assert lisi.active
    # An app created after 2022-06-20 gets no avatar.
    assert lisi.avatar == ""
    disabled = client.member("wangwu")
    assert (disabled.userid, disabled.status, disabled.active) == ("WangWu", 2, False)
    assert not client.member("SunQi").active
    # Visible by name only: no visible department.
    assert client.member("qian-ba@hq").departments == ()


def test_an_older_app_gets_the_avatar(sim: WeComSimulator, make_client: MakeClient) -> None:
    member = make_client(LEGACY_SECRET, agent_id=DEMO_LEGACY_AGENT_ID).member("ZhangSan")
    assert member.avatar.startswith("https://wework.qpic.cn/")
    assert member.departments == (3,)


def test_members_outside_visibility_or_unknown_are_their_own_class(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client()
    hidden = fail(wire, MemberNotVisible, lambda: client.member("Zhao.Liu"))
    assert not isinstance(hidden, MemberNotFound)
    assert hidden.errcode == 60011
    assert "visibility" in str(hidden)
    unknown = fail(wire, MemberNotFound, lambda: client.member("nobody"))
    assert unknown.errcode == 60111
    assert isinstance(unknown, MemberNotVisible)
    assert not hidden.is_config_error
    assert not unknown.is_config_error


def test_a_removed_member_is_not_found(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client()
    client.member("lisi")
    sim.remove_member("lisi")
    fail(wire, MemberNotFound, lambda: client.member("lisi"))


def test_departments_at_and_below_a_root(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client()
    assert client.departments() == [
        Department(2, "研发中心", 1),
        Department(3, "平台组", 2),
        Department(4, "前端组", 2),
    ]
    assert [d.id for d in client.departments(3)] == [3]
    assert fail(wire, MemberNotVisible, lambda: client.departments(5)).errcode == 60011
    assert fail(wire, DepartmentNotFound, lambda: client.departments(99)).errcode == 60003
    legacy = make_client(LEGACY_SECRET, agent_id=DEMO_LEGACY_AGENT_ID)
    everything = legacy.departments()
    assert everything[0] == Department(1, "示例科技有限公司", 0)
    assert {d.id for d in everything} == {1, 2, 3, 4, 5, 6}


def test_bad_arguments_are_refused_before_any_call(make_client: MakeClient) -> None:
    client = make_client()
    for call in (
        lambda: client.member("bad userid"),
        lambda: client.member(""),
        lambda: client.departments(0),
        lambda: client.departments(True),
        lambda: client.user_identity(""),
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        make_client(userinfo_api="other")


# --- the errcode table -------------------------------------------------------------------

# Every code of the reference's table, on user/get: (errcode, class, config error).
API_ERRORS = [
    (40013, CredentialsInvalid, True),
    (40091, CredentialsInvalid, True),
    (41004, CredentialsInvalid, True),
    (40056, AppMisconfigured, True),
    (41001, RequestInvalid, False),
    (40029, CodeInvalid, False),
    (42003, CodeInvalid, False),
    (41008, RequestInvalid, False),
    (48002, AppMisconfigured, True),
    (50003, AppMisconfigured, True),
    (50001, AppMisconfigured, True),
    (60011, MemberNotVisible, False),
    (60021, MemberNotVisible, False),
    (60111, MemberNotFound, False),
    (60020, AppMisconfigured, True),
    (84014, UserTicketInvalid, False),
    (84015, UserTicketInvalid, False),
    (84025, RequestInvalid, False),
    (301002, AppMisconfigured, True),
    (99999, UnknownAPIError, False),
]


@pytest.mark.parametrize(("errcode", "kind", "config"), API_ERRORS)
def test_each_errcode_is_its_class_and_is_not_retried(
    sim: WeComSimulator,
    make_client: MakeClient,
    wire: Wire,
    caplog: pytest.LogCaptureFixture,
    errcode: int,
    kind: type[WeComAPIError],
    config: bool,
) -> None:
    client = make_client()
    client.member("ZhangSan")  # the token is cached
    sim.clear_calls()
    caplog.clear()
    sim.add_fault(WeComFault("user_get", "errcode", errcode=errcode))
    exc = fail(wire, kind, lambda: client.member("ZhangSan"))
    assert type(exc) is kind
    assert exc.errcode == errcode
    assert exc.is_config_error is config
    assert exc.hint is not None
    assert f"errcode {errcode}" in str(exc)
    assert exc.hint in str(exc)
    assert calls(sim, "user_get") == 1
    assert calls(sim, "gettoken") == 0
    # One operator line, with the errcode and the hint.
    lines = [r for r in caplog.records if r.name == "gateway.wecom"]
    assert len(lines) == 1
    # A member the app is not for is a refusal (INFO), not trouble an operator must fix.
    refusal = issubclass(kind, wecom_client.MemberNotVisible)
    assert lines[0].levelno == (logging.INFO if refusal else logging.WARNING)
    assert f"errcode {errcode}" in lines[0].getMessage()
    assert exc.hint in lines[0].getMessage()


def test_60020_names_the_address_to_trust(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client()
    client.member("ZhangSan")
    sim.update_app(DEMO_AGENT_ID, trusted_ips=("10.9.8.7",))
    exc = fail(wire, AppMisconfigured, lambda: client.member("ZhangSan"))
    assert exc.errcode == 60020
    assert exc.from_ip == "127.0.0.1"
    assert "add 127.0.0.1 to" in str(exc)


@pytest.mark.parametrize("errcode", [40014, 42001, 40001])
def test_an_invalid_token_is_dropped_refetched_and_the_call_retried_once(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire, errcode: int
) -> None:
    client = make_client()
    client.member("ZhangSan")
    sim.add_fault(WeComFault("user_get", "errcode", errcode=errcode))
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert calls(sim, "gettoken") == 2
    assert calls(sim, "user_get") == 3
    # Refused again with the fresh token: raised, no second refetch.
    sim.add_fault(WeComFault("user_get", "errcode", errcode=errcode, times=2))
    exc = fail(wire, AccessTokenInvalid, lambda: client.member("ZhangSan"))
    assert exc.errcode == errcode
    assert calls(sim, "gettoken") == 3
    assert calls(sim, "user_get") == 5


def test_a_token_wecom_invalidated_early_is_refetched(
    sim: WeComSimulator, make_client: MakeClient
) -> None:
    client = make_client()
    client.departments()
    sim.invalidate_tokens()
    code = sim.mint_code("lisi", CALLBACK)
    assert client.user_identity(code) == WeComUser("lisi")
    assert calls(sim, "gettoken") == 2
    assert [c.outcome for c in sim.calls("auth_getuserinfo")] == [40014, 0]


def test_an_expired_token_is_refetched(sim: WeComSimulator, make_client: MakeClient) -> None:
    # WeCom's clock ran ahead of ours: WeCom says expired (42001) before we think so.
    client = make_client()
    client.member("ZhangSan")
    sim.advance_clock(7300)
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert [c.outcome for c in sim.calls("user_get")] == [0, 42001, 0]


@pytest.mark.parametrize("errcode", [45009, 45033])
def test_rate_limits_back_off_and_keep_the_token(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire, errcode: int
) -> None:
    client = make_client()
    client.member("ZhangSan")
    sim.add_fault(WeComFault("user_get", "errcode", errcode=errcode))
    exc = fail(wire, RateLimited, lambda: client.member("ZhangSan"))
    assert exc.retry_after == 60
    assert calls(sim, "user_get") == 2
    client.member("ZhangSan")
    assert calls(sim, "gettoken") == 1


def test_system_busy_is_retried_with_backoff_at_most_three_times(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    slept: list[float] = []
    client = make_client(budget=30.0, sleep=slept.append)
    client.member("ZhangSan")
    sim.add_fault(WeComFault("user_get", "errcode", errcode=-1, times=2))
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert slept == [0.2, 0.4]
    slept.clear()
    sim.add_fault(WeComFault("user_get", "errcode", errcode=-1, times=10))
    fail(wire, SystemBusy, lambda: client.member("ZhangSan"))
    assert slept == [0.2, 0.4, 0.8]
    assert calls(sim, "user_get") == 1 + 3 + 4


def test_busy_retries_end_with_the_budget(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client(timeout=0.5)
    client.member("ZhangSan")
    sim.add_fault(WeComFault("user_get", "errcode", errcode=-1, times=10))
    started = time.monotonic()
    fail(wire, SystemBusy, lambda: client.member("ZhangSan"))
    assert time.monotonic() - started < 0.6
    assert calls(sim, "user_get") == 1 + 2  # a 0.2 s pause fits in 0.5 s, 0.4 more does not


# --- gettoken failures -------------------------------------------------------------------

GETTOKEN_CONFIG_ERRORS = [40001, 40013, 40091, 41004, 50003, 40056]


@pytest.mark.parametrize("errcode", GETTOKEN_CONFIG_ERRORS)
def test_a_gettoken_config_error_is_reported_once_and_not_retried(
    sim: WeComSimulator,
    make_client: MakeClient,
    wire: Wire,
    caplog: pytest.LogCaptureFixture,
    errcode: int,
) -> None:
    sim.add_fault(WeComFault("gettoken", "errcode", errcode=errcode, times=100))
    client = make_client()
    for _ in range(5):
        exc = fail(wire, WeComAPIError, lambda: client.member("ZhangSan"))
        assert exc.is_config_error
        assert exc.errcode == errcode
    assert calls(sim, "gettoken") == 1
    assert calls(sim, "user_get") == 0
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert f"errcode {errcode}" in errors[0].getMessage()
    assert "hint " in errors[0].getMessage()


def test_a_wrong_secret_is_latched_for_every_worker_and_no_ip_ban_follows(
    sim: WeComSimulator,
    make_client: MakeClient,
    make_tokens: MakeTokens,
    wire: Wire,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make_client(WRONG_SECRET)
    exc = fail(wire, CredentialsInvalid, lambda: worker.user_identity("any-code"))
    assert exc.errcode == 40001
    assert "wecom.secret is wrong" in str(exc)
    # Sign-ins queue up on this worker, from many threads: none calls gettoken again.
    errors: list[BaseException] = []

    def sign_in() -> None:
        try:
            worker.member("ZhangSan")
        except WeComError as failure:
            errors.append(safe(failure, wire))

    threads = [threading.Thread(target=sign_in) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 20
    assert all(isinstance(e, CredentialsInvalid) for e in errors)
    # Another worker (or replica) sharing the store fails fast too, and says so once.
    other = make_client(WRONG_SECRET)
    for _ in range(3):
        fail(wire, CredentialsInvalid, lambda: other.member("ZhangSan"))
    assert calls(sim, "gettoken") == 1
    assert sim.wrong_secrets() == 1
    lines = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 2  # one per worker
    # Five minutes on, the wrong secret is tried again, once.
    clock.now += 301
    fail(wire, CredentialsInvalid, lambda: worker.member("ZhangSan"))
    fail(wire, CredentialsInvalid, lambda: worker.member("ZhangSan"))
    assert sim.wrong_secrets() == 2
    # A corrected secret is not held back by the wrong one's failure.
    fixed = make_client(SECRET, tokens=make_tokens())
    assert fixed.member("ZhangSan").userid == "ZhangSan"
    assert calls(sim, "gettoken") == 3


def test_a_rate_limited_gettoken_is_left_alone_for_a_minute(
    sim: WeComSimulator,
    make_client: MakeClient,
    wire: Wire,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.add_fault(WeComFault("gettoken", "errcode", errcode=45009))
    client = make_client()
    for _ in range(3):
        exc = fail(wire, RateLimited, lambda: client.member("ZhangSan"))
        assert not exc.is_config_error
    assert calls(sim, "gettoken") == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    clock.now += 61
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert calls(sim, "gettoken") == 2


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (WeComFault("gettoken", "http_status", status=502), WeComProtocolError),
        (WeComFault("gettoken", "garbage"), WeComProtocolError),
        (WeComFault("gettoken", "reset"), WeComUnavailable),
    ],
)
def test_a_transient_gettoken_failure_is_not_remembered(
    sim: WeComSimulator,
    make_client: MakeClient,
    wire: Wire,
    fault: WeComFault,
    kind: type[WeComError],
) -> None:
    sim.add_fault(fault)
    client = make_client()
    exc = fail(wire, kind, lambda: client.member("ZhangSan"))
    assert not exc.is_config_error
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert calls(sim, "gettoken") == 2


# --- the shared token --------------------------------------------------------------------


def run_together(count: int, task: Callable[[], Any]) -> list[Any]:
    """``task`` on ``count`` threads released at once; results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = task()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fifty_sign_ins_on_an_empty_cache_make_one_gettoken(
    sim: WeComSimulator, make_client: MakeClient
) -> None:
    sim.add_fault(WeComFault("gettoken", "delay", delay=0.3))
    client = make_client()
    results = run_together(50, lambda: client.member("ZhangSan"))
    assert all(getattr(r, "userid", None) == "ZhangSan" for r in results), results
    assert calls(sim, "gettoken") == 1
    assert calls(sim, "user_get") == 50


def test_workers_and_replicas_sharing_the_store_make_one_gettoken(
    sim: WeComSimulator,
    make_client: MakeClient,
    make_tokens: MakeTokens,
    tmp_path: Path,
    codec: SessionCodec,
    clock: Clock,
) -> None:
    sim.add_fault(WeComFault("gettoken", "delay", delay=0.3))
    # Five workers, each with its own cache and its own connection to the one store.
    workers = [
        make_client(
            tokens=AccessTokens(
                SqliteStore(tmp_path / "state.db", session_max_age=3600), codec, clock=clock
            )
        )
        for _ in range(5)
    ]
    counter = iter(range(1000))
    lock = threading.Lock()

    def sign_in() -> str:
        with lock:
            worker = workers[next(counter) % len(workers)]
        return worker.member("lisi").userid

    assert run_together(40, sign_in) == ["lisi"] * 40
    assert calls(sim, "gettoken") == 1


def test_the_store_never_holds_the_token_in_clear(
    sim: WeComSimulator, make_client: MakeClient, tmp_path: Path, wire: Wire
) -> None:
    make_client().member("ZhangSan")
    tokens = [v for v in wire.values if v not in (SECRET, LEGACY_SECRET, WRONG_SECRET)]
    assert tokens
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        for token in tokens:
            assert token.encode() not in data, path
        assert SECRET.encode() not in data


def test_a_warm_worker_does_not_ask_the_store(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens, store: SqliteStore
) -> None:
    counting = CountingStore(store)
    client = make_client(tokens=make_tokens(counting))
    client.member("ZhangSan")
    counting.calls = 0
    for _ in range(20):
        client.member("ZhangSan")
    assert counting.calls == 0


def test_another_worker_takes_the_token_from_the_store(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens
) -> None:
    make_client().member("ZhangSan")
    make_client(tokens=make_tokens()).member("lisi")
    assert calls(sim, "gettoken") == 1


def test_the_token_is_refreshed_ahead_of_expiry_by_one_caller(
    sim: WeComSimulator, make_client: MakeClient, clock: Clock
) -> None:
    client = make_client()
    client.member("ZhangSan")
    first = sim.calls("user_get")[0]
    assert first.outcome == 0
    # Four minutes left: due for refresh but still valid. Nobody waits, one refreshes.
    clock.now += 7200 - 240
    sim.add_fault(WeComFault("gettoken", "delay", delay=0.3))
    results = run_together(20, lambda: client.member("ZhangSan"))
    assert all(getattr(r, "userid", None) == "ZhangSan" for r in results), results
    assert calls(sim, "gettoken") == 2
    client.member("ZhangSan")
    assert calls(sim, "gettoken") == 2


def test_a_failed_refresh_ahead_keeps_the_valid_token(
    sim: WeComSimulator, make_client: MakeClient, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    client.member("ZhangSan")
    clock.now += 7200 - 100
    sim.add_fault(WeComFault("gettoken", "errcode", errcode=40001))
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert client.member("ZhangSan").userid == "ZhangSan"
    # The configuration error is reported (once) and gettoken left alone meanwhile.
    assert calls(sim, "gettoken") == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_invalidate_drops_only_the_cached_token(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens, wire: Wire
) -> None:
    tokens = make_tokens()
    client = make_client(tokens=tokens)
    token = tokens.get(client, deadline=time.monotonic() + 2)
    tokens.invalidate(client, "not-the-cached-token")
    assert tokens.get(client, deadline=time.monotonic() + 2) == token
    tokens.invalidate(client, token)
    fresh = tokens.get(client, deadline=time.monotonic() + 2)
    assert fresh != token
    assert calls(sim, "gettoken") == 2
    # Another worker still holding the old token drops it, and takes the new one.
    other_tokens = make_tokens()
    assert other_tokens.get(client, deadline=time.monotonic() + 2) == fresh
    other_tokens.invalidate(client, token)
    assert other_tokens.get(client, deadline=time.monotonic() + 2) == fresh
    assert calls(sim, "gettoken") == 2


def test_waiters_give_up_at_their_deadline_while_another_worker_fetches(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens, wire: Wire
) -> None:
    sim.add_fault(WeComFault("gettoken", "delay", delay=1.0))
    holder = make_client(timeout=3.0)
    fetching = threading.Thread(target=lambda: holder.member("ZhangSan"))
    fetching.start()
    time.sleep(0.2)
    waiter = make_client(tokens=make_tokens(), timeout=0.3)
    started = time.monotonic()
    exc = fail(wire, WeComTimeout, lambda: waiter.member("ZhangSan"))
    assert time.monotonic() - started < 0.5
    assert exc.endpoint == "gettoken"
    fetching.join()
    # Once the holder is done, the waiter's worker finds its token in the store.
    assert waiter.member("ZhangSan").userid == "ZhangSan"
    assert calls(sim, "gettoken") == 1


def test_a_waiter_takes_over_when_the_holder_fails(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens
) -> None:
    sim.add_fault(WeComFault("gettoken", "hang", delay=5.0))
    holder = make_client(timeout=0.4)
    fetching = threading.Thread(target=lambda: _quietly(lambda: holder.member("ZhangSan")))
    fetching.start()
    time.sleep(0.1)
    waiter = make_client(tokens=make_tokens(), timeout=2.0)
    assert waiter.member("ZhangSan").userid == "ZhangSan"
    fetching.join()
    assert calls(sim, "gettoken") == 2


def test_a_dead_holders_lock_expires(
    sim: WeComSimulator, make_client: MakeClient, make_tokens: MakeTokens, store: SqliteStore
) -> None:
    tokens = make_tokens()
    client = make_client(tokens=tokens, timeout=2.0)
    # A replica took the lock and died: its short TTL frees it.
    store.add(tokens._app(client).lock_key, b"dead", 0.4)
    started = time.monotonic()
    assert client.member("ZhangSan").userid == "ZhangSan"
    assert 0.3 < time.monotonic() - started < 1.5
    assert calls(sim, "gettoken") == 1


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(WeComError):
        call()


class CountingStore:
    """The store, counting calls, and unavailable on demand."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.description = inner.description
        self.calls = 0
        self.down = False

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("sqlite:///state.db: disk I/O error")

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        self._check()
        return self.inner.add(key, value, ttl)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._check()
        self.inner.put(key, value, ttl)

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.inner.get(key)


def test_without_the_store_a_worker_uses_its_own_valid_token(
    sim: WeComSimulator,
    make_client: MakeClient,
    make_tokens: MakeTokens,
    store: SqliteStore,
    clock: Clock,
) -> None:
    flaky = CountingStore(store)
    client = make_client(tokens=make_tokens(flaky))
    client.member("ZhangSan")
    flaky.down = True
    # Due for refresh: the store cannot be asked, the old token still works.
    clock.now += 7200 - 60
    assert client.member("ZhangSan").userid == "ZhangSan"
    # Expired: nothing to go on.
    clock.now += 120
    with pytest.raises(StoreUnavailable):
        client.member("ZhangSan")
    # A worker that never had one.
    with pytest.raises(StoreUnavailable):
        make_client(tokens=make_tokens(flaky)).member("ZhangSan")
    flaky.down = False
    assert client.member("ZhangSan").userid == "ZhangSan"


def test_a_token_is_kept_by_the_worker_when_the_store_fails_to_write(
    sim: WeComSimulator,
    make_client: MakeClient,
    make_tokens: MakeTokens,
    store: SqliteStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class WriteFails(CountingStore):
        def put(self, key: str, value: bytes, ttl: float) -> None:
            raise StoreUnavailable("sqlite:///state.db: database or disk is full")

    client = make_client(tokens=make_tokens(WriteFails(store)))
    client.member("ZhangSan")
    client.member("lisi")
    assert calls(sim, "gettoken") == 1
    assert any("kept by this worker only" in r.getMessage() for r in caplog.records)


def test_tokens_sealed_with_another_session_secret_are_not_read(
    sim: WeComSimulator, make_client: MakeClient, store: SqliteStore, clock: Clock
) -> None:
    make_client().member("ZhangSan")
    other = AccessTokens(
        store, SessionCodec("another-session-secret-of-32-characters!"), clock=clock
    )
    make_client(tokens=other).member("ZhangSan")
    assert calls(sim, "gettoken") == 2


# --- odd replies, from a server of canned replies ---------------------------------------


class Canned(http.server.ThreadingHTTPServer):
    """Answers ``/cgi-bin/<endpoint>`` with ``replies[endpoint]``: a JSON-able object, or
    (status, raw bytes); gettoken works unless told otherwise. Notes the paths asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CannedHandler)
        self.replies: dict[str, Any] = {}
        self.asked: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CannedHandler(http.server.BaseHTTPRequestHandler):
    server: Canned

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        endpoint = parts.path.removeprefix("/cgi-bin/")
        self.server.asked.append(endpoint)
        reply = self.server.replies.get(endpoint)
        if reply is None and endpoint == "gettoken":
            reply = {
                "errcode": 0,
                "errmsg": "ok",
                "access_token": "CANNED-TOKEN-1",
                "expires_in": 7200,
            }
        if reply is None:
            reply = (404, b"<html>404 Not Found</html>")
        if callable(reply):
            reply = reply(parse_qs(parts.query))
        status, body = (
            reply
            if isinstance(reply, tuple)
            else (200, json.dumps(reply, ensure_ascii=False).encode())
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def canned_client(canned: Canned, make_client: MakeClient, wire: Wire) -> WeComClient:
    wire.values.add("CANNED-TOKEN-1")
    return make_client(api_base=canned.url, timeout=1.0)


OK = {"errcode": 0, "errmsg": "ok"}


@pytest.mark.parametrize(
    ("endpoint", "reply", "expected"),
    [
        ("auth/getuserinfo", {**OK, "UserId": "Bob"}, WeComUser("Bob")),
        ("auth/getuserinfo", {**OK, "OpenId": "oX1"}, ExternalUser("oX1")),
        (
            "auth/getuserinfo",
            {"userid": "a.b-c_d@e", "extra": [1, {"x": None}]},
            WeComUser("a.b-c_d@e"),
        ),
        ("auth/getuserinfo", {**OK, "userid": "", "openid": "oX2"}, ExternalUser("oX2")),
        ("auth/getuserinfo", {**OK, "userid": 12345}, WeComUser("12345")),
        ("auth/getuserinfo", {**OK, "userid": "wwabc/Bob"}, WeComUser("wwabc/Bob")),
        ("user/getuserinfo", {"UserId": "Bob", "DeviceId": "", **OK}, WeComUser("Bob")),
        ("user/getuserinfo", {**OK, "userid": "Bob"}, WeComUser("Bob")),
        ("user/getuserinfo", {**OK, "openid": "oX3", "DeviceId": "d"}, ExternalUser("oX3")),
    ],
)
def test_either_spelling_in_either_reply(
    canned: Canned, make_client: MakeClient, wire: Wire, endpoint: str, reply: Any, expected: Any
) -> None:
    wire.values.add("CANNED-TOKEN-1")
    api = "legacy" if endpoint.startswith("user/") else "auth"
    canned.replies[endpoint] = reply
    client = make_client(api_base=canned.url, userinfo_api=api)
    assert client.user_identity("CODE-A") == expected


def test_auto_falls_back_to_the_legacy_api_for_good(
    canned: Canned, canned_client: WeComClient, caplog: pytest.LogCaptureFixture
) -> None:
    canned.replies["user/getuserinfo"] = {"UserId": "Bob", "DeviceId": "", **OK}
    assert canned_client.user_identity("CODE-B") == WeComUser("Bob")
    assert canned_client.user_identity("CODE-C") == WeComUser("Bob")
    assert canned.asked == ["gettoken", "auth/getuserinfo", "user/getuserinfo", "user/getuserinfo"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_auth_only_does_not_fall_back(canned: Canned, make_client: MakeClient, wire: Wire) -> None:
    wire.values.add("CANNED-TOKEN-1")
    client = make_client(api_base=canned.url, userinfo_api="auth")
    exc = fail(wire, WeComProtocolError, lambda: client.user_identity("CODE-D"))
    assert exc.status == 404
    assert "user/getuserinfo" not in canned.asked


@pytest.mark.parametrize(
    ("reply", "member"),
    [
        # Strings for numbers, a bare id, a comma-separated list, repeats, floats.
        (
            {**OK, "userid": "Bob", "name": "鲍勃", "department": ["3", "1"], "status": "1"},
            ("Bob", "鲍勃", (3, 1), 1, ""),
        ),
        (
            {**OK, "userid": "Bob", "name": "B", "department": 7, "status": 1.0},
            ("Bob", "B", (7,), 1, ""),
        ),
        (
            {**OK, "userid": "Bob", "name": "B", "department": "3,1,3", "status": 2},
            ("Bob", "B", (3, 1), 2, ""),
        ),
        # Missing, null and oddly typed display fields; extra fields.
        ({**OK, "userid": "bob"}, ("bob", "", (), None, "")),
        (
            {
                **OK,
                "userid": "Bob",
                "name": None,
                "department": None,
                "status": None,
                "avatar": None,
            },
            ("Bob", "", (), None, ""),
        ),
        (
            {
                **OK,
                "userid": "Bob",
                "name": ["x"],
                "avatar": 5,
                "gender": {},
                "extattr": "?",
                "department": [],
                "status": 5,
            },
            ("Bob", "", (), 5, ""),
        ),
        (
            {**OK, "userid": "Bob", "avatar": "", "thumb_avatar": "https://x.example/a/100"},
            ("Bob", "", (), None, "https://x.example/a/100"),
        ),
        ({**OK, "userid": "Bob", "avatar": "javascript:alert(1)"}, ("Bob", "", (), None, "")),
        (
            {**OK, "userid": "Bob", "avatar": "https://x.example/a\r\nSet-Cookie: x=1"},
            ("Bob", "", (), None, ""),
        ),
    ],
)
def test_odd_member_replies_are_read_robustly(
    canned: Canned, canned_client: WeComClient, reply: Any, member: tuple[Any, ...]
) -> None:
    canned.replies["user/get"] = reply
    got = canned_client.member("bob")
    assert (got.userid, got.name, got.departments, got.status, got.avatar) == member
    assert got.active is (member[3] == 1)


@pytest.mark.parametrize(
    "reply",
    [
        (200, b"<html><body>502 Bad Gateway</body></html>"),
        (200, b""),
        (200, b"[1, 2, 3]"),
        (200, b'{"errcode": 0, "userid": "Bob"'),
        (200, b"\xff\xfe\x00garbage"),
        (500, b'{"errcode": 0, "errmsg": "ok", "userid": "Bob"}'),
        (502, b"<html>bad gateway</html>"),
        (200, b"[" * 100000),
        (200, b'{"errcode": 0, "pad": "' + b"x" * 70000 + b'"}'),
        {**OK, "errcode": "abc", "userid": "Bob"},
        {**OK, "errcode": True, "userid": "Bob"},
        {**OK, "name": "no userid"},
        {**OK, "userid": "Alice"},
        {**OK, "userid": "Bob\r\nX-Injected: 1"},
        {**OK, "userid": "Bob", "department": [{"id": 1}]},
        {**OK, "userid": "Bob", "department": ["x"]},
        {**OK, "userid": "Bob", "department": [0]},
        {**OK, "userid": "Bob", "department": [True]},
        {**OK, "userid": "Bob", "status": "active"},
        {**OK, "userid": "Bob", "status": [1]},
        {**OK, "userid": "Bob", "status": False},
    ],
)
def test_garbage_and_unusable_replies_are_protocol_errors(
    canned: Canned,
    canned_client: WeComClient,
    wire: Wire,
    caplog: pytest.LogCaptureFixture,
    reply: Any,
) -> None:
    canned.replies["user/get"] = reply
    exc = fail(wire, WeComProtocolError, lambda: canned_client.member("Bob"))
    assert not exc.is_config_error
    assert str(exc).startswith("WeCom user/get call failed: ")
    assert len([r for r in caplog.records if r.name == "gateway.wecom"]) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            {
                **OK,
                "department": [
                    {"id": "2", "name": "研发", "parentid": "1", "order": "x"},
                    {"id": 3, "parentid": None},
                    {"id": 2, "name": "again"},
                ],
            },
            [Department(2, "研发", 1), Department(3, "", 0)],
        ),
        ({**OK, "department": []}, []),
    ],
)
def test_odd_department_lists_are_read_robustly(
    canned: Canned, canned_client: WeComClient, reply: Any, expected: list[Department]
) -> None:
    canned.replies["department/list"] = reply
    assert canned_client.departments() == expected


@pytest.mark.parametrize(
    "reply",
    [
        OK,
        {**OK, "department": {"id": 1}},
        {**OK, "department": [1, 2]},
        {**OK, "department": [{"name": "no id"}]},
        {**OK, "department": [{"id": 2, "parentid": "root"}]},
    ],
)
def test_unusable_department_lists_are_protocol_errors(
    canned: Canned, canned_client: WeComClient, wire: Wire, reply: Any
) -> None:
    canned.replies["department/list"] = reply
    fail(wire, WeComProtocolError, canned_client.departments)


def test_a_large_department_list_is_read(canned: Canned, canned_client: WeComClient) -> None:
    departments = [{"id": i, "name": f"部门{i}", "parentid": 1, "order": i} for i in range(2, 5002)]
    canned.replies["department/list"] = {**OK, "department": departments}
    assert len(canned_client.departments()) == 5000


@pytest.mark.parametrize(
    "reply",
    [
        {**OK, "expires_in": 7200},
        {**OK, "access_token": "", "expires_in": 7200},
        {**OK, "access_token": "has space", "expires_in": 7200},
        {**OK, "access_token": "T", "expires_in": 0},
        {**OK, "access_token": "T", "expires_in": "soon"},
        (200, b"not json"),
    ],
)
def test_unusable_token_replies_are_protocol_errors(
    canned: Canned, canned_client: WeComClient, wire: Wire, reply: Any
) -> None:
    canned.replies["gettoken"] = reply
    fail(wire, WeComProtocolError, lambda: canned_client.member("Bob"))


def test_errmsg_is_kept_safe_for_the_log(
    canned: Canned, canned_client: WeComClient, wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    # An errmsg that echoes the token and carries control characters.
    canned.replies["user/get"] = {
        "errcode": 60011,
        "errmsg": "no privilege CANNED-TOKEN-1 \x1b[31m\n, hint: [1234567890123456789012345], "
        "from ip: 203.0.113.9, more info at https://open.work.weixin.qq.com/devtool/query?e=60011",
    }
    exc = fail(wire, MemberNotVisible, lambda: canned_client.member("Bob"))
    assert exc.hint == "1234567890123456789012345"
    assert exc.from_ip == "203.0.113.9"
    assert "CANNED-TOKEN-1" not in exc.errmsg
    assert "\x1b" not in exc.errmsg
    assert "\n" not in exc.errmsg
    assert "more info" not in exc.errmsg
    assert "hint 1234567890123456789012345" in str(exc)


# --- time budget ---------------------------------------------------------------------------


def test_a_hanging_api_call_times_out_within_the_budget(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client(timeout=0.3)
    client.member("ZhangSan")
    sim.add_fault(WeComFault("user_get", "hang", delay=5.0))
    started = time.monotonic()
    fail(wire, WeComTimeout, lambda: client.member("ZhangSan"))
    assert time.monotonic() - started < 0.5
    sim.release_hangs()


def test_a_code_is_never_redeemed_twice_after_a_timeout(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    client = make_client(timeout=0.3)
    client.member("ZhangSan")
    sim.add_fault(WeComFault("auth_getuserinfo", "hang", delay=5.0))
    fail(wire, WeComTimeout, lambda: client.user_identity(sim.mint_code("lisi", CALLBACK)))
    assert calls(sim, "auth_getuserinfo") == 1
    sim.release_hangs()


def test_one_deadline_bounds_token_and_call_together(
    sim: WeComSimulator, make_client: MakeClient, wire: Wire
) -> None:
    sim.add_fault(WeComFault("gettoken", "delay", delay=0.4))
    client = make_client(timeout=5.0)
    started = time.monotonic()
    fail(wire, WeComTimeout, lambda: client.member("ZhangSan", deadline=time.monotonic() + 0.3))
    assert time.monotonic() - started < 0.5


@contextlib.contextmanager
def silent_server(trickle: bool) -> Iterator[str]:
    """A server that accepts and never answers, or trickles a body a byte at a time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            if trickle:
                # The head at once (requests bounds it on threads only per socket wait,
                # gevent's timer bounds it in the server), then a body that keeps coming.
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for byte in b'{"errcode":0,' + b" " * 1000:
                    if stop.wait(0.05):
                        break
                    with contextlib.suppress(OSError):
                        conn.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("trickle", [False, True])
def test_a_server_that_never_finishes_times_out_within_the_budget(
    make_client: MakeClient, wire: Wire, trickle: bool
) -> None:
    with silent_server(trickle) as url:
        client = make_client(api_base=url, timeout=0.4)
        started = time.monotonic()
        exc = fail(wire, WeComTimeout, lambda: client.member("Bob"))
        assert time.monotonic() - started < 0.7
        assert exc.endpoint == "gettoken"


def test_a_refused_connection_is_unavailable(make_client: MakeClient, wire: Wire) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(api_base=f"http://127.0.0.1:{port}", timeout=0.5)
    exc = fail(wire, WeComUnavailable, lambda: client.member("Bob"))
    assert "connection refused" in str(exc)
    assert "corpsecret" not in str(exc)


def test_debug_logging_does_not_write_secrets(
    sim: WeComSimulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    client.user_identity(sim.mint_code("lisi", CALLBACK))
    lines = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert any("corpsecret=***" in line for line in lines)
    assert any("code=***" in line and "access_token=***" in line for line in lines)


def test_one_redaction_filter_covers_both_clients_wires(caplog: pytest.LogCaptureFixture) -> None:
    # Both clients import it; it is installed once, and blanks every secret of either wire.
    from gateway.providers import transport

    urllib3_log = logging.getLogger("urllib3.connectionpool")
    assert [type(f) for f in urllib3_log.filters].count(transport._RedactQuery) == 1
    urllib3_log.debug(
        '%s "GET %s HTTP/1.1"', "http://x", "/sns?appid=a&secret=S1&code=C1&refresh_token=R1"
    )
    urllib3_log.debug(
        '%s "GET %s HTTP/1.1"', "http://x", "/cgi-bin/gettoken?corpid=a&corpsecret=S2"
    )
    urllib3_log.debug('%s "GET %s"', "http://x", "/cgi-bin/x?access_token=T3&user_ticket=U3")
    text = " ".join(r.getMessage() for r in caplog.records if r.name == urllib3_log.name)
    for value in ("S1", "C1", "R1", "S2", "T3", "U3"):
        assert f"={value}" not in text
    assert text.count("=***") == 6


def test_reprs_name_no_secret(make_client: MakeClient) -> None:
    client = make_client()
    assert SECRET not in repr(client)
    assert client.credential_id not in repr(client)
