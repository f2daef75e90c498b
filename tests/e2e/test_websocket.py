"""WebSocket through the gateway, on the wire (contract Part 2, "WebSocket and other
long-lived connections").

Real gunicorn gateways (the gevent worker) in front of a real WebSocket app (the
``websockets`` library, ``tests.helpers.websocket.WsUpstream``), with users signed in through
the WeChat simulator. Clients are the ``websockets`` client for ordinary traffic and raw
sockets where the bytes themselves matter: malformed handshakes, fragments, frames cut short.

- the handshake: the 101 relayed with the right ``Sec-WebSocket-Accept``; the app gets the
  identity headers and never a client's copies; subprotocols and permessage-deflate are
  negotiated end to end;
- frames both ways: text, binary, 1 MiB, fragmented messages with a ping between fragments,
  ping/pong both ways;
- every way a tunnel ends, and the close code each side sees: either side closing, a
  revocation (``sessions revoke --sid/--user``, sign-out, sign-out everywhere), the session
  expiring, the state store unreachable past ``state.max_staleness``, the idle timeout,
  SIGTERM, the app vanishing (at a frame boundary or inside a frame) and the client vanishing
  inside a frame;
- the rules: 401 JSON without a session, 403 for a user not allowed, the Origin check, public
  paths, ``Upgrade: h2c`` never passed upstream, forward-auth ignoring ``Upgrade``;
- bad input: malformed handshakes (400, the body of one never read as a request), other
  versions (426), an ``Upgrade`` that does not count (RFC 9110 7.8: a plain request), an app's
  broken 101 (502), an app refusing the upgrade (passed on), the gthread worker (501);
- 200 tunnels at once.

After every test the gateway's tunnel gauge (``wechat_gateway_open_websockets``) is back to 0
and it logged no traceback (``settled``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.connection import Connection

from gateway.simulator import SimApp, Simulator, SimulatorServer, SimUser
from tests.helpers.raw_e2e import (
    IDENTITY_HEADERS,
    SPOOFS,
    RawBrowser,
    WeChat,
    send_url,
    start_gateway,
)
from tests.helpers.support import COOKIE, HTML_ACCEPT, GatewayProcess, free_port
from tests.helpers.websocket import (
    BROKEN_HANDSHAKES,
    OPCODES,
    SUBPROTOCOL,
    Answer,
    RawConnection,
    WsUpstream,
    accept_of,
    close_payload,
    connect,
    exchange,
    frame_bytes,
    handshake_headers,
    new_key,
    open_raw,
    open_websockets,
    until,
    wait_open_websockets,
)

#: An origin other than the gateway's whose pages may open WebSockets on ``/``.
LISTED_ORIGIN = "https://app.example.test"
#: The contract's bound for closing a revoked or expired session's WebSocket.
WITHIN = 5.0

USERS = (
    "alice",
    "mallory",
    "sid-user",
    "user-user",
    "logout-user",
    "everywhere-user",
    "bystander",
    "expiring",
    "crowd",
)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wechat_app() -> Iterator[WeChat]:
    avatar = "https://thirdwx.qlogo.cn/mmopen/vi_32/{}/132"
    simulator = Simulator(
        [SimApp("wx7e1a2b3c4d5e6f72", "7f2b8e0c1d9a4b7e6c3f0a1b2c3d4e5f", "website")],
        [SimUser(key, key.title(), avatar.format(key)) for key in USERS],
    )
    with SimulatorServer(simulator) as server:
        yield WeChat(server)


@pytest.fixture(scope="module")
def ws_app() -> Iterator[WsUpstream]:
    app = WsUpstream()
    yield app
    app.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, ws_app: WsUpstream
) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("websocket")
    port = free_port()
    route = {"url": ws_app.url, "timeout": 3}
    overrides: dict[str, Any] = {
        "server": {"bind": f"127.0.0.1:{port}", "workers": 2},
        "upstreams": [
            {"prefix": "/idle/", **route, "websocket_idle_timeout": "2s"},
            {"prefix": "/public/", **route, "public": True},
            {"prefix": "/restricted/", **route, "allow": [wechat_app.openid("mallory")]},
            {"prefix": "/", **route, "websocket_origins": [LISTED_ORIGIN]},
        ],
    }
    with start_gateway(tmp, wechat_app, ws_app.url, port, **overrides) as process:
        yield process


@pytest.fixture(autouse=True)
def settled(gateway: GatewayProcess) -> Iterator[None]:
    """After each test: every tunnel of the shared gateway is gone, and it logged no
    traceback meanwhile."""
    before = len(gateway.log())
    yield
    wait_open_websockets(gateway.port, 0)
    logged = gateway.log()[before:]
    assert "Traceback" not in logged, logged


def sign_in(gateway: GatewayProcess, wechat: WeChat, user: str) -> RawBrowser:
    browser = RawBrowser()
    start = browser.get(f"{gateway.url}/_gateway/login")
    confirmed = send_url(start.location.split("#", 1)[0] + f"&sim_user={user}")
    reply = browser.get(confirmed.location)
    assert reply.status == 302, reply.text
    assert browser.value_of(COOKIE)
    return browser


def cookie_of(browser: RawBrowser) -> list[tuple[str, str]]:
    return [("Cookie", f"{COOKIE}={browser.value_of(COOKIE)}")]


@pytest.fixture(scope="module")
def alice(gateway: GatewayProcess, wechat_app: WeChat) -> list[tuple[str, str]]:
    """The ``Cookie`` header of a signed-in user, shared by the tests that need any user."""
    return cookie_of(sign_in(gateway, wechat_app, "alice"))


def closed_by_gateway(conn: Connection, timeout: float) -> tuple[Close, float]:
    """The close frame the client receives next, and how long it took; no message may
    come first."""
    start = time.monotonic()
    try:
        message = conn.recv(timeout=timeout)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"the connection ended without a close frame: {closed}"
        return closed.rcvd, time.monotonic() - start
    except TimeoutError:
        raise AssertionError(f"no close frame within {timeout} s") from None
    raise AssertionError(f"a message instead of a close frame: {message!r}")


def assert_echoes(conn: Connection, message: str | bytes) -> None:
    conn.send(message)
    assert conn.recv(timeout=5) == message


def assert_refused(answer: Answer, status: int) -> dict[str, Any]:
    """A refusal by the gateway itself: the status, as JSON, and no 101."""
    assert answer.status == status, (answer.status, answer.headers, answer.body[:500])
    return answer.json()


# --- the handshake ----------------------------------------------------------------------------


def test_the_101_is_relayed_with_the_right_accept_and_frames_pass(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    key = new_key()
    conn, answer = open_raw(gateway.port, "/hs/basic", alice, key=key)
    with conn:
        assert answer.status == 101, answer
        assert (answer.value("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in (answer.value("Connection") or "").lower()
        assert answer.value("Sec-WebSocket-Accept") == accept_of(key)
        peer = ws_app.next_peer("/hs/basic")
        assert peer.value("Sec-WebSocket-Key") == key
        assert peer.value("Sec-WebSocket-Version") == "13"
        conn.send_frame("text", b"hello")
        echo = conn.recv_frame()
        assert (echo.fin, echo.opcode, echo.payload, echo.masked) == (True, 1, b"hello", False)
        assert peer.messages == ["hello"]
        # The client closes: the app sees its code, the client the app's answer, then
        # both connections end.
        conn.send_frame("close", close_payload(1000, "done"))
        reply = conn.recv_frame()
        assert (reply.opcode, reply.close_code, reply.masked) == (OPCODES["close"], 1000, False)
        assert conn.read_to_end(5) == b""
        conn.close()
        closed = peer.wait_ended()
        assert closed is not None and (closed.code, closed.reason) == (1000, "done")
    # The access line of a tunnel is written when it ends, with its 101.
    until(lambda: '"GET /hs/basic HTTP/1.1" 101 ' in gateway.log(), 5, "the access line")


def test_the_app_gets_the_identity_and_never_the_clients_copies(
    gateway: GatewayProcess, ws_app: WsUpstream, wechat_app: WeChat
) -> None:
    browser = sign_in(gateway, wechat_app, "alice")
    cookie = [("Cookie", f"theme=dark; {COOKIE}={browser.value_of(COOKIE)}; lang=zh")]
    forged = [*SPOOFS, ("X-WeChat-Assertion", "spoof.spoof.spoof")]
    conn, answer = open_raw(gateway.port, "/hs/identity", [*cookie, *forged])
    with conn:
        assert answer.status == 101, answer
        peer = ws_app.next_peer("/hs/identity")
        assert peer.value("X-WeChat-OpenID") == wechat_app.openid("alice")
        assert peer.value("X-WeChat-AppID") == wechat_app.app.app_id
        assert peer.value("X-WeChat-UnionID") == wechat_app.unionid("alice")
        assert peer.value("X-WeChat-Nickname") == "Alice"
        assert peer.value("X-WeChat-Avatar") == "https://thirdwx.qlogo.cn/mmopen/vi_32/alice/132"
        # The signed assertion (a JWT) is the gateway's, about this user.
        assertion = peer.value("X-WeChat-Assertion")
        assert assertion is not None and assertion.count(".") == 2, assertion
        claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
        assert claims["sub"] == claims["openid"] == wechat_app.openid("alice"), claims
        # Nothing else of the X-WeChat-* family: no client copy under any spelling.
        names = [
            n.lower()
            for n, _ in peer.headers
            if n.lower().replace("_", "-").startswith("x-wechat-")
        ]
        expected = {h.lower() for h in IDENTITY_HEADERS} | {"x-wechat-assertion"}
        assert sorted(names) == sorted(expected), names
        assert not [v for _, v in peer.headers if "spoof" in v], peer.headers
        # The gateway's own cookie is removed; the app's stay.
        assert peer.value("Cookie") == "theme=dark; lang=zh"
        assert (peer.value("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in (peer.value("Connection") or "").lower()


def test_subprotocols_are_negotiated_end_to_end(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    with connect(gateway.port, "/hs/sub", alice, subprotocols=["chat.v2", SUBPROTOCOL]) as conn:
        assert conn.subprotocol == SUBPROTOCOL
        peer = ws_app.next_peer("/hs/sub")
        assert peer.value("Sec-WebSocket-Protocol") == f"chat.v2, {SUBPROTOCOL}"
        assert_echoes(conn, "with a subprotocol")
    with connect(gateway.port, "/hs/nosub", alice) as conn:
        assert conn.subprotocol is None
        assert ws_app.next_peer("/hs/nosub").value("Sec-WebSocket-Protocol") is None
        assert conn.response is not None
        assert "Sec-WebSocket-Protocol" not in conn.response.headers


# --- frames -----------------------------------------------------------------------------------


def test_text_and_binary_messages_both_ways(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    with connect(gateway.port, "/frames/small", alice) as conn:
        peer = ws_app.next_peer("/frames/small")
        assert_echoes(conn, "héllo, 你好 🚀")
        assert_echoes(conn, bytes(range(256)))
        assert_echoes(conn, "")
        assert peer.messages == ["héllo, 你好 🚀", bytes(range(256)), ""]
        peer.send("from the app")
        peer.send(b"\x00\xffbinary from the app")
        assert conn.recv(timeout=5) == "from the app"
        assert conn.recv(timeout=5) == b"\x00\xffbinary from the app"


def test_one_mebibyte_messages_both_ways(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    binary = os.urandom(1 << 20)
    text = base64.b64encode(os.urandom(3 << 18)).decode("ascii")  # 1 MiB of text
    assert len(binary) == len(text) == 1 << 20
    with connect(gateway.port, "/frames/big", alice) as conn:
        peer = ws_app.next_peer("/frames/big")
        conn.send(binary)
        assert conn.recv(timeout=10) == binary
        assert peer.wait_messages(1)[0] == binary
        peer.send(text)  # from the app, unprompted
        assert conn.recv(timeout=10) == text
        conn.send(text)
        assert conn.recv(timeout=10) == text
        assert peer.wait_messages(2)[1] == text


def test_fragmented_messages_with_a_ping_between_fragments(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    conn, answer = open_raw(gateway.port, "/frames/fragments", alice)
    with conn:
        assert answer.status == 101, answer
        peer = ws_app.next_peer("/frames/fragments")
        # To the app: three fragments, and a ping between them (RFC 6455 5.4 allows it).
        conn.send_frame("text", b"Hello", fin=False)
        conn.send_frame("cont", b", ", fin=False)
        conn.send_frame("ping", b"between fragments")
        conn.send_frame("cont", b"world", fin=True)
        pong = conn.recv_frame()
        assert (pong.opcode, pong.payload, pong.masked) == (
            OPCODES["pong"],
            b"between fragments",
            False,
        )
        echo = conn.recv_frame()
        assert (echo.fin, echo.opcode, echo.payload) == (True, OPCODES["text"], b"Hello, world")
        assert peer.messages == ["Hello, world"]
        # From the app: a message in fragments reaches the client as those frames.
        peer.send(["frag", "ment", "ed"])
        frames = [conn.recv_frame()]
        while not frames[-1].fin:
            frames.append(conn.recv_frame())
        assert [f.opcode for f in frames[:3]] == [OPCODES["text"], 0, 0]
        assert all(f.opcode == 0 for f in frames[1:])
        assert b"".join(f.payload for f in frames) == b"fragmented"
        assert not any(f.masked for f in frames)
        conn.send_frame("close", close_payload(1000))
        assert conn.recv_frame().close_code == 1000


def test_pings_are_answered_by_the_other_end_both_ways(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    with connect(gateway.port, "/frames/ping", alice) as conn:
        peer = ws_app.next_peer("/frames/ping")
        assert conn.ping(b"from the client").wait(5), "no pong from the app"
        assert peer.ping(b"from the app").wait(5), "no pong from the client"
        assert_echoes(conn, "still fine")


def test_permessage_deflate_is_negotiated_end_to_end(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    text = "compressible " * 80_000
    with connect(gateway.port, "/frames/deflate", alice, compression="deflate") as conn:
        peer = ws_app.next_peer("/frames/deflate")
        assert (peer.value("Sec-WebSocket-Extensions") or "").startswith("permessage-deflate")
        assert conn.response is not None
        assert conn.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert conn.protocol.extensions and peer.connection.protocol.extensions
        assert_echoes(conn, text)
        assert peer.messages == [text]
    # On the wire: the app's frame arrives compressed (RSV1 set), byte for byte.
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover")]
    raw, answer = open_raw(gateway.port, "/frames/deflate-raw", [*alice, *offer])
    with raw:
        assert answer.status == 101, answer
        assert (answer.value("Sec-WebSocket-Extensions") or "").startswith("permessage-deflate")
        peer = ws_app.next_peer("/frames/deflate-raw")
        peer.send("a" * 100_000)
        frame = raw.recv_frame()
        assert frame.rsv == 0b100 and frame.opcode == OPCODES["text"], frame.rsv
        assert len(frame.payload) < 1000
        inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(frame.payload + b"\0\0\xff\xff")
        assert inflated == b"a" * 100_000
        raw.send_frame("close", close_payload(1000))
        assert raw.recv_frame().close_code == 1000


# --- how a tunnel ends ------------------------------------------------------------------------


def test_the_client_closes(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    conn = connect(gateway.port, "/close/client", alice)
    peer = ws_app.next_peer("/close/client")
    assert_echoes(conn, "before closing")
    conn.close(4000, "the client is done")
    closed = peer.wait_ended()
    assert closed is not None and (closed.code, closed.reason) == (4000, "the client is done")
    answer = conn.protocol.close_rcvd
    assert answer is not None and answer.code == 4000  # the app's reply reached the client


def test_the_app_closes(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    with connect(gateway.port, "/close/app", alice) as conn:
        peer = ws_app.next_peer("/close/app")
        assert_echoes(conn, "before closing")
        peer.close(4001, "the app is done")
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "the app is done")
        answer = peer.wait_ended()
        assert answer is not None and answer.code == 4001  # the client's reply reached the app


def _sessions(gateway: GatewayProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", *args, "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("how", "user"),
    [
        ("sessions revoke --sid", "sid-user"),
        ("sessions revoke --user", "user-user"),
        ("sign-out from another connection", "logout-user"),
        ("sign-out everywhere from another browser", "everywhere-user"),
    ],
)
def test_an_ended_session_closes_its_websocket_with_1008(
    gateway: GatewayProcess, ws_app: WsUpstream, wechat_app: WeChat, how: str, user: str
) -> None:
    browser = sign_in(gateway, wechat_app, user)
    bystander = cookie_of(sign_in(gateway, wechat_app, "bystander"))
    path = "/end/" + how.replace(" ", "-")
    with (
        connect(gateway.port, path, cookie_of(browser)) as conn,
        connect(gateway.port, path + "/bystander", bystander) as other,
    ):
        peer = ws_app.next_peer(path)
        assert_echoes(conn, "before")
        if how == "sessions revoke --sid":
            rows = json.loads(
                _sessions(gateway, "list", "--json", "--user", wechat_app.openid(user))
            )
            (row,) = rows
            assert _sessions(gateway, "revoke", "--sid", row["sid"]).strip() == "revoked 1 session"
        elif how == "sessions revoke --user":
            revoked = _sessions(gateway, "revoke", "--user", wechat_app.openid(user))
            assert revoked.strip() == "revoked 1 session"
        elif how == "sign-out from another connection":
            copy = RawBrowser()
            copy.set(COOKIE, browser.value_of(COOKIE) or "", "127.0.0.1")
            assert copy.get(gateway.url + "/_gateway/logout").status in (200, 302)
        else:
            laptop = sign_in(gateway, wechat_app, user)
            assert laptop.get(gateway.url + "/_gateway/logout?everywhere=1").status in (200, 302)
        close, took = closed_by_gateway(conn, WITHIN + 1)
        assert (close.code, close.reason) == (1008, "session ended")
        assert took <= WITHIN, took
        # The app is told the gateway went away.
        told = peer.wait_ended()
        assert told is not None and told.code == 1001, told
        # Another user's WebSocket is untouched.
        assert_echoes(other, "still open")


def test_an_expired_session_closes_its_websocket_with_1008(
    tmp_path: Path, wechat_app: WeChat, ws_app: WsUpstream
) -> None:
    with start_gateway(tmp_path, wechat_app, ws_app.url, session={"max_age": "3s"}) as gateway:
        browser = sign_in(gateway, wechat_app, "expiring")
        signed_in = time.monotonic()
        with connect(gateway.port, "/end/expiry", cookie_of(browser)) as conn:
            assert_echoes(conn, "while it lasts")
            close, _ = closed_by_gateway(conn, 3 + WITHIN + 1)
            after = time.monotonic() - signed_in
            assert (close.code, close.reason) == (1008, "session ended")
            # Not before the session ends (its times are whole seconds), and in time.
            assert 2.0 <= after <= 3 + WITHIN, after
        wait_open_websockets(gateway.port, 0)
        assert "Traceback" not in gateway.log()


def test_an_unreachable_store_closes_websockets_of_sessions_with_1013(
    tmp_path: Path, wechat_app: WeChat, ws_app: WsUpstream
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    overrides: dict[str, Any] = {
        "state": {"url": f"sqlite://{state}/state.db", "max_staleness": "2s"},
        "upstreams": [
            {"prefix": "/public/", "url": ws_app.url, "public": True},
            {"prefix": "/", "url": ws_app.url},
        ],
    }
    with start_gateway(tmp_path, wechat_app, ws_app.url, **overrides) as gateway:
        browser = sign_in(gateway, wechat_app, "alice")
        with (
            connect(gateway.port, "/store/session", cookie_of(browser)) as conn,
            connect(gateway.port, "/public/store") as public,
        ):
            assert_echoes(conn, "while the store answers")
            # Where the database was, a directory: nothing can open it.
            saved = tmp_path / "saved"
            state.rename(saved)
            (state / "state.db").mkdir(parents=True)
            try:
                close, took = closed_by_gateway(conn, 2 + WITHIN)
                assert (close.code, close.reason) == (1013, "session store unreachable")
                assert 1.0 <= took <= 2 + WITHIN, took
                assert_echoes(public, "no session, nothing to revoke: open as before")
            finally:
                (state / "state.db").rmdir()
                state.rmdir()
                saved.rename(state)
        wait_open_websockets(gateway.port, 0)
        assert "Traceback" not in gateway.log()


def test_an_idle_tunnel_is_closed_with_1001(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    with connect(gateway.port, "/idle/ws", alice) as conn:
        peer = ws_app.next_peer("/idle/ws")
        # Traffic keeps it open past the timeout (2 s)...
        start = time.monotonic()
        while True:
            assert_echoes(conn, "busy")
            last = time.monotonic()
            if last - start > 3:
                break
            time.sleep(0.4)
        # ... silence closes it: 2 s after the last byte, checked once a second.
        close, _ = closed_by_gateway(conn, 6)
        silent = time.monotonic() - last
        assert (close.code, close.reason) == (1001, "idle timeout")
        assert 2.0 <= silent <= 2 + 2.5, silent
        told = peer.wait_ended()
        assert told is not None and told.code == 1001, told


def test_sigterm_gives_websockets_the_grace_time_then_1001(
    tmp_path: Path, wechat_app: WeChat, ws_app: WsUpstream
) -> None:
    # One worker: once it answers, it has loaded the gateway and handles SIGTERM as it
    # should (a worker still booting when SIGTERM comes is another story).
    overrides: dict[str, Any] = {
        "server": {"graceful_timeout": 2, "workers": 1},
        "upstreams": [{"prefix": "/", "url": ws_app.url, "public": True}],
    }
    with start_gateway(tmp_path, wechat_app, ws_app.url, **overrides) as gateway:
        assert gateway.process is not None
        conns = [connect(gateway.port, f"/term/{i}") for i in range(4)]
        peers = [ws_app.next_peer(f"/term/{i}") for i in range(4)]
        for conn in conns:
            assert_echoes(conn, "before")
        wait_open_websockets(gateway.port, 4)
        sigterm = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        for conn in conns:  # the grace time: tunnels still work
            assert_echoes(conn, "during the grace time")
        for conn in conns:
            close, _ = closed_by_gateway(conn, 5)
            after = time.monotonic() - sigterm
            assert (close.code, close.reason) == (1001, "server shutting down")
            assert 1.8 <= after <= 2 + 2, after
            conn.close()
        for peer in peers:
            told = peer.wait_ended()
            assert told is not None and told.code == 1001, told
        # The process exits, before the master's SIGKILL deadline (graceful_timeout + 5 s).
        assert gateway.process.wait(timeout=2 + 5 - (time.monotonic() - sigterm)) == 0
        assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_the_app_vanishing_at_a_frame_boundary_is_1014(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], reset: bool
) -> None:
    path = f"/vanish/app-{'reset' if reset else 'fin'}"
    with connect(gateway.port, path, alice) as conn:
        peer = ws_app.next_peer(path)
        peer.send("last words")
        assert conn.recv(timeout=5) == "last words"
        peer.vanish(reset=reset)
        close, _ = closed_by_gateway(conn, 5)
        assert close.code == 1014, close
        if not reset:
            assert close.reason == "upstream closed"


def test_the_app_vanishing_mid_frame_ends_the_client_connection(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    conn, answer = open_raw(gateway.port, "/vanish/app-mid-frame", alice)
    with conn:
        assert answer.status == 101, answer
        peer = ws_app.next_peer("/vanish/app-mid-frame")
        frame = frame_bytes(OPCODES["binary"], os.urandom(300), mask=False)
        peer.vanish_mid_frame(frame, 100)
        # What was sent, then the end: no close frame can follow half a frame.
        assert conn.read_to_end(5) == frame[:100]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_the_client_vanishing_mid_frame_ends_the_app_connection(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], reset: bool
) -> None:
    path = f"/vanish/client-mid-frame-{'reset' if reset else 'fin'}"
    conn, answer = open_raw(gateway.port, path, alice)
    assert answer.status == 101, answer
    peer = ws_app.next_peer(path)
    conn.send_frame("text", b"a whole frame first")
    peer.wait_messages(1)
    conn.sock.sendall(frame_bytes(OPCODES["binary"], os.urandom(300))[:60])
    if reset:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    # The app's connection ends too, with no close frame made up inside its frame.
    assert peer.wait_ended() is None
    assert peer.messages == ["a whole frame first"]


# --- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("cookie", ["none", "forged"])
def test_no_session_is_the_401_json_never_a_redirect(
    gateway: GatewayProcess, ws_app: WsUpstream, cookie: str
) -> None:
    headers = [("Accept", HTML_ACCEPT)]
    if cookie == "forged":
        headers.append(("Cookie", f"{COOKIE}=not-a-session"))
    answer = exchange(gateway.port, f"/rules/401-{cookie}", [*handshake_headers(), *headers])
    body = assert_refused(answer, 401)
    assert body["error"] == "unauthorized" and "/_gateway/login" in body["login_url"]
    assert ws_app.requests_to(f"/rules/401-{cookie}") == []


def test_a_user_not_allowed_gets_403(
    gateway: GatewayProcess, ws_app: WsUpstream, wechat_app: WeChat, alice: list[tuple[str, str]]
) -> None:
    assert_refused(exchange(gateway.port, "/restricted/a", [*handshake_headers(), *alice]), 403)
    assert ws_app.requests_to("/restricted/a") == []
    mallory = cookie_of(sign_in(gateway, wechat_app, "mallory"))
    with connect(gateway.port, "/restricted/m", mallory) as conn:
        assert_echoes(conn, "allowed")


@pytest.mark.parametrize(
    ("origin", "path", "status"),
    [
        ("https://evil.example", "/rules/origin", 403),
        ("http://127.0.0.1:{other}", "/rules/origin", 403),
        ("https://127.0.0.1:{port}", "/rules/origin", 403),
        ("null", "/rules/origin", 403),
        (LISTED_ORIGIN, "/public/origin", 403),  # listed for another route only
        ("http://127.0.0.1:{port}", "/rules/origin", 101),  # public_url's origin
        ("HTTP://127.0.0.1:{port}", "/rules/origin", 101),
        (LISTED_ORIGIN, "/rules/origin", 101),
        (None, "/rules/origin", 101),
    ],
)
def test_the_origin_check(
    gateway: GatewayProcess,
    ws_app: WsUpstream,
    alice: list[tuple[str, str]],
    origin: str | None,
    path: str,
    status: int,
) -> None:
    headers = list(alice)
    if origin is not None:
        headers.append(("Origin", origin.format(port=gateway.port, other=gateway.port + 1)))
    before = len(ws_app.requests_to(path))
    conn, answer = open_raw(gateway.port, path, headers)
    with conn:
        if status == 101:
            assert answer.status == 101, answer
            conn.send_frame("text", b"from the right page")
            assert conn.recv_frame().payload == b"from the right page"
            conn.send_frame("close", close_payload(1000))
            assert conn.recv_frame().close_code == 1000
        else:
            assert_refused(answer, status)
            assert len(ws_app.requests_to(path)) == before
    if status == 403:
        # Checked before the access decision: a cross-site page without a session too.
        anonymous = [h for h in headers if h[0] != "Cookie"]
        answer = exchange(gateway.port, path, [*handshake_headers(), *anonymous])
        assert_refused(answer, 403)


def test_a_public_path_needs_no_session(gateway: GatewayProcess, ws_app: WsUpstream) -> None:
    spoofed = [("X-WeChat-OpenID", "spoof"), ("Origin", gateway.url)]
    with connect(gateway.port, "/public/ws", spoofed) as conn:
        assert_echoes(conn, "anyone")
        peer = ws_app.next_peer("/public/ws")
        assert not [n for n, _ in peer.headers if n.lower().startswith("x-wechat-")]


def test_an_h2c_upgrade_reaches_the_app_as_plain_http(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], wechat_app: WeChat
) -> None:
    h2c = [
        ("Upgrade", "h2c"),
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ]
    answer = exchange(gateway.port, "/rules/h2c", [*h2c, *alice, ("Connection", "close")])
    assert answer.status == 200, answer
    seen = answer.json()
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert "upgrade" not in headers and "http2-settings" not in headers, headers
    assert "upgrade" not in headers.get("connection", "").lower()
    assert headers["x-wechat-openid"] == wechat_app.openid("alice")
    # After the usual access decision: without a session, a browser is sent to sign in.
    anonymous = exchange(gateway.port, "/rules/h2c-anonymous", [*h2c, ("Accept", HTML_ACCEPT)])
    assert anonymous.status == 302 and "/_gateway/login" in (anonymous.value("Location") or "")
    assert ws_app.requests_to("/rules/h2c-anonymous") == []


def test_forward_auth_ignores_upgrade_and_the_connection_stays_usable(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    before = len(ws_app.requests)
    with RawConnection(gateway.port) as conn:
        conn.send_request("/_gateway/auth", [*handshake_headers(), *alice])
        allowed = conn.read_answer()
        assert 200 <= allowed.status < 300, allowed
        assert allowed.value("X-WeChat-OpenID")
        conn.send_request("/_gateway/auth", handshake_headers())
        assert conn.read_answer().status == 401
        conn.send_request("/_gateway/healthz", [])
        assert conn.read_answer().status == 200
    assert len(ws_app.requests) == before


# --- bad input --------------------------------------------------------------------------------


def _without_key(key: str | None) -> list[tuple[str, str]]:
    headers = [h for h in handshake_headers() if h[0] != "Sec-WebSocket-Key"]
    return headers if key is None else [*headers, ("Sec-WebSocket-Key", key)]


#: Malformed handshakes: headers, method and body.
BAD_CASES: dict[str, tuple[list[tuple[str, str]], str, bytes]] = {
    "no key": (_without_key(None), "GET", b""),
    "empty key": (_without_key(""), "GET", b""),
    "key not base64": (_without_key("!!!!!!!!!!!!!!!!!!!!!!=="), "GET", b""),
    "key of 15 bytes": (_without_key(base64.b64encode(bytes(15)).decode()), "GET", b""),
    "key of 17 bytes": (_without_key(base64.b64encode(bytes(17)).decode()), "GET", b""),
    "two keys": ([*handshake_headers(), ("Sec-WebSocket-Key", new_key())], "GET", b""),
    "a body": ([*handshake_headers(), ("Content-Length", "5")], "GET", b"hello"),
    "a chunked body": (
        [*handshake_headers(), ("Transfer-Encoding", "chunked")],
        "GET",
        b"5\r\nhello\r\n0\r\n\r\n",
    ),
    "POST": ([*handshake_headers(), ("Content-Length", "0")], "POST", b""),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_malformed_handshake_is_400_and_never_reaches_the_app(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], case: str
) -> None:
    headers, method, body = BAD_CASES[case]
    path = "/bad/" + case.replace(" ", "-")
    answer = exchange(gateway.port, path, [*headers, *alice], method=method, body=body)
    assert answer.status == 400, answer
    assert ws_app.requests_to(path) == []
    assert_refused(answer, 400)  # JSON, as every answer of the gateway to a handshake


@pytest.mark.parametrize("case", ["not named in Connection", "HTTP/1.0"])
def test_an_upgrade_that_does_not_count_is_a_plain_request(
    gateway: GatewayProcess,
    ws_app: WsUpstream,
    alice: list[tuple[str, str]],
    wechat_app: WeChat,
    case: str,
) -> None:
    """RFC 9110 7.8 (docs/websocket.md): an ``Upgrade`` not named in ``Connection``, or in an
    HTTP/1.0 request, does not count; it is dropped like any hop-by-hop header."""
    path = "/plain/" + case.replace(" ", "-").replace("/", "")
    if case == "HTTP/1.0":
        headers, version = handshake_headers(), "HTTP/1.0"
    else:
        headers, version = handshake_headers(connection="keep-alive"), "HTTP/1.1"
    answer = exchange(
        gateway.port, path, [*headers, *alice, ("Connection", "close")], version=version
    )
    assert answer.status == 200, answer
    seen = {name.lower(): value for name, value in answer.json()["headers"]}
    assert "upgrade" not in seen, seen
    assert seen["x-wechat-openid"] == wechat_app.openid("alice")
    assert ws_app.requests_to(path) and not [p for p in ws_app.peers if p.path == path]


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_the_body_of_a_refused_handshake_is_never_read_as_a_request(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], framing: str
) -> None:
    inner = ["GET /bad/smuggled HTTP/1.1", f"Host: 127.0.0.1:{gateway.port}"]
    inner += [f"{name}: {value}" for name, value in [*handshake_headers(), *alice]]
    smuggled = ("\r\n".join(inner) + "\r\n\r\n").encode()
    if framing == "chunked":
        headers = [("Transfer-Encoding", "chunked")]
        body = f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n"
    else:
        headers, body = [("Content-Length", str(len(smuggled)))], smuggled
    with RawConnection(gateway.port) as conn:
        conn.send_request("/bad/carrier", [*handshake_headers(), *alice, *headers], body=body)
        refused = conn.read_answer()
        assert refused.status == 400, refused
        if (refused.value("Connection") or "").lower() == "close":
            assert conn.read_to_end(5) == b""
        else:  # kept alive: the next answer is the next request's, not the body's
            conn.send_request("/_gateway/healthz", [])
            following = conn.read_answer()
            assert following.status == 200 and following.body == b"ok\n", following
    assert ws_app.requests_to("/bad/smuggled") == ws_app.requests_to("/bad/carrier") == []


def test_another_websocket_version_is_426(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]]
) -> None:
    answer = exchange(gateway.port, "/bad/version", [*handshake_headers(version="8"), *alice])
    assert answer.status == 426, answer
    assert answer.value("Sec-WebSocket-Version") == "13"
    assert ws_app.requests_to("/bad/version") == []
    assert_refused(answer, 426)  # JSON, as every answer of the gateway to a handshake


@pytest.mark.parametrize("broken", BROKEN_HANDSHAKES)
def test_a_broken_101_from_the_app_is_502(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], broken: str
) -> None:
    path = f"/broken/{broken}"
    answer = exchange(gateway.port, path, [*handshake_headers(), *alice])
    assert_refused(answer, 502)
    assert len(ws_app.requests_to(path)) == 1
    # The app's half-open socket is closed, not kept.
    assert ws_app.next_peer(path).wait_ended() is None


@pytest.mark.parametrize("status", [404, 503])
def test_an_app_refusing_the_upgrade_is_passed_on(
    gateway: GatewayProcess, ws_app: WsUpstream, alice: list[tuple[str, str]], status: int
) -> None:
    answer = exchange(gateway.port, f"/status/{status}", [*handshake_headers(), *alice])
    assert answer.status == status, answer
    assert answer.body == f"the app answers {status}\n".encode()
    assert (answer.value("Content-Type") or "").startswith("text/plain")


def test_the_gthread_worker_answers_501(
    tmp_path: Path, wechat_app: WeChat, ws_app: WsUpstream
) -> None:
    overrides: dict[str, Any] = {
        "server": {"worker_class": "gthread", "threads": 4},
        "upstreams": [{"prefix": "/", "url": ws_app.url, "public": True}],
    }
    with start_gateway(tmp_path, wechat_app, ws_app.url, **overrides) as gateway:
        answer = exchange(gateway.port, "/gthread/ws", handshake_headers())
        body = assert_refused(answer, 501)
        assert "gevent" in json.dumps(body)
        assert ws_app.requests_to("/gthread/ws") == []
        assert "Traceback" not in gateway.log()


# --- many at once -----------------------------------------------------------------------------


def test_two_hundred_tunnels_at_once(
    gateway: GatewayProcess, wechat_app: WeChat, ws_app: WsUpstream
) -> None:
    cookie = cookie_of(sign_in(gateway, wechat_app, "crowd"))
    count = 200
    conns: list[Connection] = []
    lock = threading.Lock()

    def open_one(i: int) -> None:
        conn = connect(gateway.port, f"/crowd/{i}", cookie)
        with lock:
            conns.append(conn)

    def talk(conn: Connection) -> None:
        name = conn.request.path if conn.request is not None else "?"
        for j in range(3):
            conn.send(f"{name} #{j}")
        assert [conn.recv(timeout=10) for _ in range(3)] == [f"{name} #{j}" for j in range(3)]

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            list(pool.map(open_one, range(count)))
            assert len(conns) == count
            until(lambda: open_websockets(gateway.port) == count, 10, f"{count} open tunnels")
            list(pool.map(talk, conns))
    finally:
        with ThreadPoolExecutor(max_workers=40) as pool:
            list(pool.map(lambda conn: conn.close(), conns))
    crowd = [p for p in ws_app.peers if p.path.startswith("/crowd/")]
    assert len(crowd) == count
    assert all(len(p.messages) == 3 for p in crowd)
