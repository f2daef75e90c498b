"""Shared state on one machine, end to end: the embedded SQLite store under a real gateway.

A gateway with two workers and its own state file; users sign in through the simulator.
Revocation (the ``sessions`` command, sign-out, ``logout?everywhere=1``) must end a session on
every worker within a second, survive a restart, and leave nothing usable in the store; a
store that cannot be read is a 503 where the contract says so, and is recovered from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.simulator import SimApp, Simulator, SimulatorServer, SimUser
from tests.helpers.raw_e2e import RawBrowser, Reply, WeChat, send, send_url, start_gateway
from tests.helpers.support import HTML_ACCEPT, GatewayProcess, free_port
from tests.helpers.upstreams import EchoUpstream

_WITHIN = 1.0


USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


@pytest.fixture(scope="module")
def wechat_app() -> Iterator[WeChat]:
    avatar = "https://thirdwx.qlogo.cn/mmopen/vi_32/{}/132"
    simulator = Simulator(
        [SimApp("wx5e1a2b3c4d5e6f71", "6f2b8e0c1d9a4b7e6c3f0a1b2c3d4e5f", "website")],
        [SimUser(key, key.title(), avatar.format(key)) for key in USERS],
    )
    with SimulatorServer(simulator) as server:
        yield WeChat(server)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, upstream: EchoUpstream
) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("state")
    port = free_port()
    overrides = {
        "server": {"bind": f"127.0.0.1:{port}", "workers": 2},
        "state": {"url": f"sqlite://{tmp}/state.db", "max_staleness": "2s"},
        "access": {"public": ["/public/"]},
    }
    with start_gateway(tmp, wechat_app, upstream.url, port, **overrides) as process:
        yield process


def _signed_in(gateway: GatewayProcess, wechat: WeChat, user: str) -> RawBrowser:
    browser = RawBrowser()
    agent = [("User-Agent", "state-test/1.0")]
    start = browser.get(f"{gateway.url}/_gateway/login", agent)
    confirmed = send_url(start.location.split("#", 1)[0] + f"&sim_user={user}")
    reply = browser.get(confirmed.location, agent)
    assert reply.status == 302, reply.text
    return browser


def _app(gateway: GatewayProcess, browser: RawBrowser, path: str = "/page") -> Reply:
    return browser.get(gateway.url + path, [("Accept", HTML_ACCEPT)])


def _sessions(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", *args, "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _ended_everywhere(gateway: GatewayProcess, browser: RawBrowser) -> float:
    """Seconds until every request with this browser's session is refused: browser
    navigations sent to sign in, API calls the 401 (many requests, so both workers answer
    some)."""
    start = time.monotonic()
    while time.monotonic() - start < 5:
        pages = [_app(gateway, browser).status for _ in range(8)]
        apis = [
            browser.get(gateway.url + "/page", [("X-Requested-With", "XMLHttpRequest")])
            for _ in range(4)
        ]
        if set(pages) == {302} and all(
            api.status == 401 and "login_url" in api.json() for api in apis
        ):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("the session still works 5 s after its revocation")


def _until(condition: Callable[[], bool], timeout: float = 8) -> float:
    """Seconds until ``condition()`` holds (polled); fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_sign_in_is_listed_with_where_it_came_from(
    gateway: GatewayProcess, wechat_app: WeChat
) -> None:
    _signed_in(gateway, wechat_app, "alice")
    listed = _sessions(gateway, "list", "--json", "--user", wechat_app.openid("alice"))
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["openid"] == wechat_app.openid("alice")
    assert row["unionid"] == wechat_app.unionid("alice")
    assert row["app_id"] == wechat_app.app.app_id
    assert row["client"] == "127.0.0.1"
    assert row["user_agent"] == "state-test/1.0"
    assert row["sid"] and row["signed_in_at"].endswith("Z") and row["expires_at"].endswith("Z")
    by_unionid = _sessions(gateway, "list", "--json", "--user", wechat_app.unionid("alice"))
    assert [r["sid"] for r in json.loads(by_unionid.stdout)] == [row["sid"]]
    text = _sessions(gateway, "list")
    assert text.returncode == 0 and row["sid"] in text.stdout and "sid" in text.stdout


def test_revoking_a_user_ends_their_sessions_on_every_worker_within_a_second(
    gateway: GatewayProcess, wechat_app: WeChat
) -> None:
    first, second = (_signed_in(gateway, wechat_app, "bob") for _ in range(2))
    other = _signed_in(gateway, wechat_app, "carol")
    assert _app(gateway, first).status == 200
    revoked = _sessions(gateway, "revoke", "--user", wechat_app.openid("bob"))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "revoked 2 sessions"
    assert _ended_everywhere(gateway, first) < _WITHIN
    assert _ended_everywhere(gateway, second) < _WITHIN
    assert _app(gateway, other).status == 200
    # Forward-auth refuses it too; and the user can simply sign in again.
    auth = send(gateway.port, "/_gateway/auth", [("Cookie", first.cookie_header("127.0.0.1", "/"))])
    assert auth.status == 401
    again = _signed_in(gateway, wechat_app, "bob")
    assert _app(gateway, again).status == 200


def test_revoking_one_sid(gateway: GatewayProcess, wechat_app: WeChat) -> None:
    browser = _signed_in(gateway, wechat_app, "dave")
    keep = _signed_in(gateway, wechat_app, "dave")
    rows = json.loads(_sessions(gateway, "list", "--json").stdout)
    mine = [r for r in rows if r["openid"] == wechat_app.openid("dave")]
    assert len(mine) == 2
    revoked = _sessions(gateway, "revoke", "--sid", mine[0]["sid"])
    assert revoked.stdout.strip() == "revoked 1 session"
    ended = [b for b in (browser, keep) if _app(gateway, b).status != 200]
    time.sleep(_WITHIN)
    statuses = sorted(_app(gateway, b).status for b in (browser, keep))
    assert statuses == [200, 302], ended


def test_sign_out_ends_the_copied_cookie_and_everywhere_ends_them_all(
    gateway: GatewayProcess, wechat_app: WeChat
) -> None:
    browser = _signed_in(gateway, wechat_app, "erin")
    copy = RawBrowser()
    copy.set("wechat_gateway", browser.value_of("wechat_gateway") or "", "127.0.0.1")
    phone = _signed_in(gateway, wechat_app, "erin")
    assert _app(gateway, copy).status == 200
    out = browser.get(gateway.url + "/_gateway/logout", [("Accept", HTML_ACCEPT)])
    assert out.status == 200
    assert _ended_everywhere(gateway, copy) < _WITHIN
    assert _app(gateway, phone).status == 200  # a plain sign-out ends only that session
    laptop = _signed_in(gateway, wechat_app, "erin")
    everywhere = laptop.get(gateway.url + "/_gateway/logout?everywhere=1")
    assert everywhere.status == 200
    assert _ended_everywhere(gateway, phone) < _WITHIN


def test_the_store_holds_nothing_usable(gateway: GatewayProcess, wechat_app: WeChat) -> None:
    browser = _signed_in(gateway, wechat_app, "frank")
    cookie = browser.value_of("wechat_gateway")
    assert cookie
    data = b"".join(
        path.read_bytes()
        for path in Path(gateway.config["state"]["url"][9:]).parent.glob("state.db*")
    )
    assert cookie.encode() not in data
    assert wechat_app.app.app_secret.encode() not in data


def test_revocations_survive_a_restart(
    tmp_path: Path, wechat_app: WeChat, upstream: EchoUpstream
) -> None:
    port = free_port()
    overrides = {"state": {"url": f"sqlite://{tmp_path}/state.db"}}
    with start_gateway(tmp_path, wechat_app, upstream.url, port, **overrides) as gateway:
        browser = _signed_in(gateway, wechat_app, "grace")
        assert _sessions(gateway, "revoke", "--user", wechat_app.openid("grace")).returncode == 0
        _ended_everywhere(gateway, browser)
    with start_gateway(tmp_path, wechat_app, upstream.url, port, **overrides) as gateway:
        assert _app(gateway, browser).status == 302


def test_an_unreadable_store(gateway: GatewayProcess, wechat_app: WeChat) -> None:
    browser = _signed_in(gateway, wechat_app, "heidi")
    database = Path(gateway.config["state"]["url"][9:])
    saved = database.parent / "saved"
    saved.mkdir()
    for path in database.parent.glob("state.db*"):
        shutil.move(str(path), saved / path.name)
    database.mkdir()  # where the file was, a directory: nothing can open it
    try:
        ready = send(gateway.port, "/_gateway/readyz")
        assert ready.status == 503
        assert ready.json()["status"] == "unavailable" and ready.json()["cause"]
        assert send(gateway.port, "/_gateway/healthz").status == 200
        start = send(gateway.port, "/_gateway/login", [("Accept", HTML_ACCEPT)])
        assert start.status == 503
        assert "Traceback" not in start.text
        # Valid sessions are served for max_staleness (2 s), then refused: fail closed.
        assert _app(gateway, browser).status == 200
        assert _until(lambda: {_app(gateway, browser).status for _ in range(6)} == {503}) < 4
        xhr = [("X-Requested-With", "XMLHttpRequest")]
        assert browser.get(gateway.url + "/page", xhr).status == 503
        assert _app(gateway, RawBrowser(), "/public/x").status == 200  # public paths as usual
    finally:
        database.rmdir()
        for path in saved.iterdir():
            shutil.move(str(path), database.parent / path.name)
        saved.rmdir()
    assert _until(lambda: send(gateway.port, "/_gateway/readyz").status == 200) < 2
    # Every worker reloads its revocations within a second or so, then serves it again.
    assert _until(lambda: {_app(gateway, browser).status for _ in range(6)} == {200}) < 2
    assert "Traceback" not in gateway.log()
