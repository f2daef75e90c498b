"""``RedisStore`` against real Redis processes: one server, a read-only replica, a unix
socket, a password, Sentinel with a failover, and a three-node Cluster.

Every test works under a key prefix of its own, so the module shares one server; the tests
that stop, kill or flush Redis start their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.state.base import Revocations, SessionRecord, StoreUnavailable
from gateway.state.redis import RedisStore
from gateway.state.watch import RevocationWatcher
from tests.helpers.redis_server import RedisClusterNodes, RedisSentinel, RedisServer
from tests.helpers.support import APP_SECRET, SESSION_SECRET, session_cookie

MAX_AGE = 3600
PASSWORD = "s3cret-redis-password-do-not-log"
_prefixes = (f"test{n}:" for n in itertools.count())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return next(_prefixes)


@pytest.fixture
def store(server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = open_store(server, prefix)
    yield store
    store.close()


def open_store(server: RedisServer, prefix: str, **options: Any) -> RedisStore:
    options.setdefault("password", server.password)
    return RedisStore(server.url, key_prefix=prefix, session_max_age=MAX_AGE, **options)


def record(
    sid: str,
    subject: str = "oAlice",
    unionid: str | None = "uAlice",
    *,
    signed_in_at: int | None = None,
    lifetime: int = MAX_AGE,
) -> SessionRecord:
    signed_in_at = int(time.time()) - 10 if signed_in_at is None else signed_in_at
    return SessionRecord(
        sid=sid,
        subject=subject,
        unionid=unionid,
        nickname="爱丽丝 Alice",
        app_id="wx0123456789abcdef",
        provider="wechat",
        signed_in_at=signed_in_at,
        expires_at=signed_in_at + lifetime,
        client="203.0.113.7",
        user_agent="Mozilla/5.0 (Test)",
    )


def sids(records: list[SessionRecord]) -> list[str]:
    return [r.sid for r in records]


def exercise(store: RedisStore) -> None:
    """Every method of the protocol once, as a gateway would use them."""
    assert store.add("state:abc", b"\x00used\xff", 30) is True
    assert store.add("state:abc", b"again", 30) is False
    assert store.get("state:abc") == b"\x00used\xff"
    store.put("ledger:def", b"sealed", 30)
    store.put("ledger:def", b"sealed again", 30)
    assert store.get("ledger:def") == b"sealed again"
    assert store.get("missing") is None

    store.index_session(record("sid-a1", signed_in_at=int(time.time()) - 20))
    store.index_session(record("sid-b1", "oBob", None))
    assert sids(store.sessions()) == ["sid-a1", "sid-b1"]
    assert sids(store.sessions("uAlice")) == ["sid-a1"]
    assert sids(store.sessions("oBob")) == ["sid-b1"]

    _, cursor = store.revocations()
    assert store.revoke(sids=[("sid-a1", time.time() + MAX_AGE)], now=time.time()) == 1
    assert sids(store.sessions()) == ["sid-b1"]
    changed = store.revocations_since(cursor)
    assert changed is not None and "sid-a1" in changed[0].sids
    waited = store.wait_for_revocations(changed[1], 0.1)
    assert waited is not None and not waited[0] and waited[1] == changed[1]
    assert "sid-a1" in store.revocations()[0].sids
    store.ping()


# -- the protocol, on one server --------------------------------------------------------------


def test_every_method_against_a_real_redis(store: RedisStore, server: RedisServer) -> None:
    assert store.description == server.url
    exercise(store)


def test_short_lived_keys_expire(store: RedisStore) -> None:
    assert store.add("state:x", b"1", 0.2)
    store.put("ledger:y", b"2", 0.2)
    assert store.get("state:x") == b"1" and store.get("ledger:y") == b"2"
    time.sleep(0.3)
    assert store.get("state:x") is None and store.get("ledger:y") is None
    assert store.add("state:x", b"3", 10), "an expired key can be added again"


def test_sessions_expire_and_are_found_by_openid_or_unionid(
    server: RedisServer, prefix: str, store: RedisStore
) -> None:
    now = int(time.time())
    store.index_session(record("s-short", signed_in_at=now - 50, lifetime=60))
    store.index_session(record("s-long", signed_in_at=now - 40))
    store.index_session(record("s-other", "oCarol", "uCarol", signed_in_at=now - 30))
    store.index_session(record("s-gone", signed_in_at=now - 100, lifetime=50))  # expired
    assert sids(store.sessions()) == ["s-short", "s-long", "s-other"]
    assert sids(store.sessions("oAlice")) == sids(store.sessions("uAlice")) == ["s-short", "s-long"]
    assert store.sessions("oNobody") == []
    later = open_store(server, prefix, clock=lambda: time.time() + 30)
    assert sids(later.sessions()) == ["s-long", "s-other"]
    assert sids(later.sessions("uAlice")) == ["s-long"]
    with server.client() as client:
        ttl = client.pttl(f"{prefix}{{gw}}:session:s-short")
        assert 0 < ttl <= 10_000, "a record lives exactly as long as its session"


def test_revoke_ends_sessions_like_the_embedded_store(store: RedisStore) -> None:
    now = time.time()
    second = int(now)
    store.index_session(record("a-early", signed_in_at=second - 100))
    store.index_session(record("a-same-second", signed_in_at=second))
    store.index_session(record("b-1", "oBob", "uBob", signed_in_at=second - 50))
    store.index_session(record("c-1", "oCarol", None, signed_in_at=second - 50))

    # By user: every session signed in up to now, the same second included (by id).
    assert store.revoke(users=["uAlice"], now=now) == 2
    assert store.sessions("oAlice") == []
    revoked, _ = store.revocations()
    assert revoked.users == {"uAlice": float(second)}
    assert {"a-early", "a-same-second"} <= revoked.sids.keys()
    assert revoked.revokes("a-elsewhere", ("oAlice", "uAlice"), second - 1)
    assert not revoked.revokes("a-next-second", ("oAlice", "uAlice"), second + 1)

    # By id: once; a second time ends nothing more but is still recorded.
    assert store.revoke(sids=[("b-1", now + 100)], now=now) == 1
    assert store.revoke(sids=[("b-1", now + 100)], now=now) == 0
    assert store.revoke(sids=[("never-indexed", now + 100)], now=now) == 0
    assert "never-indexed" in store.revocations()[0].sids

    # Everyone.
    assert store.revoke(everyone=True, now=now) == 1  # c-1, the last one
    assert store.sessions() == []
    assert store.revocations()[0].everyone == float(second)


def test_expired_revocations_are_not_returned(server: RedisServer, prefix: str) -> None:
    store = open_store(server, prefix)
    now = time.time()
    store.revoke(sids=[("short", now + 5), ("long", now + 500)], now=now)
    assert store.revocations()[0].sids.keys() == {"short", "long"}
    later = open_store(server, prefix, clock=lambda: time.time() + 60)
    assert later.revocations()[0].sids.keys() == {"long"}


# -- following revocations from another replica -----------------------------------------------


def test_revocations_are_followed_across_two_stores(server: RedisServer, prefix: str) -> None:
    one, two = open_store(server, prefix), open_store(server, prefix)
    one.index_session(record("x1"))
    known, cursor = two.revocations()
    assert not known
    nothing = two.revocations_since(cursor)
    assert nothing is not None and not nothing[0] and nothing[1] == cursor

    assert one.revoke(sids=[("x1", time.time() + 60)], now=time.time()) == 1
    changed = two.revocations_since(cursor)
    assert changed is not None
    found, cursor = changed
    assert found.sids.keys() == {"x1"}
    assert two.revocations_since(cursor) == (Revocations(), cursor)
    assert two.revocations_since("not a cursor") is None
    assert two.revocations_since(None) is None


def test_a_waiting_store_learns_of_a_revocation_at_once(server: RedisServer, prefix: str) -> None:
    one, two = open_store(server, prefix), open_store(server, prefix)
    _, cursor = two.revocations()
    answers: list[tuple[Revocations, object] | None] = []
    waiter = threading.Thread(target=lambda: answers.append(two.wait_for_revocations(cursor, 3)))
    waiter.start()
    time.sleep(0.2)  # the waiter is blocked in XREAD by now
    revoked_at = time.monotonic()
    one.revoke(users=["oDave"], now=time.time())
    waiter.join(5)
    assert time.monotonic() - revoked_at < 1.0
    assert answers and answers[0] is not None
    assert answers[0][0].users.keys() == {"oDave"}

    # Nothing new: the wait lasts its timeout and keeps the cursor.
    started = time.monotonic()
    assert two.wait_for_revocations(answers[0][1], 0.3) == (Revocations(), answers[0][1])
    assert 0.25 < time.monotonic() - started < 1.0


def test_a_worker_watcher_follows_revocations_within_a_second(
    server: RedisServer, prefix: str
) -> None:
    one, two = open_store(server, prefix), open_store(server, prefix)
    watcher = RevocationWatcher(two, max_staleness=30)
    watcher.start()
    try:
        time.sleep(0.2)
        revoked_at = time.monotonic()
        one.revoke(sids=[("watched", time.time() + 60)], now=time.time())
        while "watched" not in watcher.revoked.sids and time.monotonic() - revoked_at < 3:
            time.sleep(0.01)
        assert time.monotonic() - revoked_at < 1.0
    finally:
        watcher.stop()


def test_a_lost_stream_makes_followers_reload(server: RedisServer, prefix: str) -> None:
    one, two = open_store(server, prefix), open_store(server, prefix)
    one.revoke(sids=[("before", time.time() + 60)], now=time.time())
    _, cursor = two.revocations()
    with server.client() as client:
        client.delete(f"{prefix}{{gw}}:revocations")  # as if Redis lost its data
    assert two.revocations_since(cursor) is None
    assert two.wait_for_revocations(cursor, 0.1) is None
    one.revoke(sids=[("after", time.time() + 60)], now=time.time())  # a new stream
    assert two.revocations_since(cursor) is None
    found, cursor = two.revocations()
    assert found.sids.keys() == {"after"}
    assert two.revocations_since(cursor) == (Revocations(), cursor)


# -- Redis going away and coming back ---------------------------------------------------------


def _every_call(store: RedisStore, cursor: object) -> dict[str, Callable[[], object]]:
    return {
        "add": lambda: store.add("k", b"v", 10),
        "put": lambda: store.put("k", b"v", 10),
        "get": lambda: store.get("k"),
        "index_session": lambda: store.index_session(record("down")),
        "sessions": store.sessions,
        "sessions(user)": lambda: store.sessions("oAlice"),
        "revoke": lambda: store.revoke(users=["oAlice"], now=time.time()),
        "revocations": store.revocations,
        "revocations_since": lambda: store.revocations_since(cursor),
        "wait_for_revocations": lambda: store.wait_for_revocations(cursor, 0.5),
        "ping": store.ping,
    }


def test_revocations_survive_a_redis_restart(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(server, "p:")
        store.index_session(record("kept"))
        store.revoke(sids=[("gone", time.time() + 60)], users=["oEve"], now=time.time())
        store.put("ledger:1", b"outcome", 60)
        _, cursor = store.revocations()
        server.kill()  # a crash: only what is on disk survives
        server.start()
        fresh = open_store(server, "p:")
        for reader in (store, fresh):
            revoked, _ = reader.revocations()
            assert revoked.sids.keys() == {"gone"} and revoked.users.keys() == {"oEve"}
            assert sids(reader.sessions()) == ["kept"]
            assert reader.get("ledger:1") == b"outcome"
        assert store.revocations_since(cursor) == (Revocations(), cursor)


def test_a_stopped_redis_is_unavailable_quickly_then_back(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(server, "p:")
        store.revoke(sids=[("old", time.time() + 60)], now=time.time())
        _, cursor = store.revocations()
        server.stop()
        for name, call in _every_call(store, cursor).items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=re.escape(server.url)):
                call()
            assert time.monotonic() - started < 2.0, name
        server.start()
        store.ping()
        assert "old" in store.revocations()[0].sids
        exercise(store)


def test_a_hung_redis_times_out_within_about_a_second(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(server, "p:")
        store.ping()
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            for call in (store.ping, lambda: store.get("k")):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="Timeout"):
                    call()
                assert time.monotonic() - started < 2.0
        finally:
            server.process.send_signal(signal.SIGCONT)
        store.ping()


def test_a_read_only_replica_refuses_writes(
    tmp_path: Path, server: RedisServer, prefix: str, store: RedisStore
) -> None:
    store.put("ledger:r", b"written on the master", 60)
    store.revoke(sids=[("r1", time.time() + 60)], now=time.time())
    with RedisServer(tmp_path / "replica", replica_of=server) as replica:
        replica.wait_for_sync()
        on_replica = open_store(replica, prefix)
        assert on_replica.get("ledger:r") == b"written on the master"
        assert "r1" in on_replica.revocations()[0].sids
        writes: dict[str, Callable[[], object]] = {
            "add": lambda: on_replica.add("k", b"v", 10),
            "put": lambda: on_replica.put("k", b"v", 10),
            "index_session": lambda: on_replica.index_session(record("r2")),
            "revoke": lambda: on_replica.revoke(sids=[("r3", time.time() + 60)], now=time.time()),
        }
        for write in writes.values():
            with pytest.raises(StoreUnavailable, match="ReadOnly"):
                write()
        on_replica.close()


# -- what is under the prefix -----------------------------------------------------------------

_GARBAGE: dict[str, tuple[Callable[[redis.Redis, str], object], str]] = {
    "a value not marked as ours": (lambda r, p: r.set(f"{p}kv:k", b"planted"), "get"),
    "a list where a value goes": (lambda r, p: r.rpush(f"{p}kv:k", b"x"), "get"),
    "a record that is not JSON": (lambda r, p: r.set(f"{p}{{gw}}:session:s1", b"{no"), "sessions"),
    "a record with a text time": (
        lambda r, p: r.set(
            f"{p}{{gw}}:session:s1",
            json.dumps({**json.loads(r.get(f"{p}{{gw}}:session:s1") or b""), "expires_at": "x"}),
        ),
        "sessions",
    ),
    "a record of another session": (
        lambda r, p: r.set(
            f"{p}{{gw}}:session:s1",
            json.dumps({**json.loads(r.get(f"{p}{{gw}}:session:s1") or b""), "sid": "s2"}),
        ),
        "user sessions",
    ),
    "a string where the index goes": (lambda r, p: r.set(f"{p}{{gw}}:sessions", b"x"), "sessions"),
    "a string where a user's set goes": (
        lambda r, p: r.set(f"{p}{{gw}}:user:oAlice", b"x"),
        "revoke user",
    ),
    "a revocation of an unknown kind": (
        lambda r, p: r.xadd(
            f"{p}{{gw}}:revocations",
            {"kind": "maybe", "target": "s1", "moment": "1", "expires_at": "9e12"},
        ),
        "revocations",
    ),
    "a revocation without fields": (
        lambda r, p: r.xadd(f"{p}{{gw}}:revocations", {"x": "y"}),
        "revocations",
    ),
    "a revocation with a text time": (
        lambda r, p: r.xadd(
            f"{p}{{gw}}:revocations",
            {"kind": "sid", "target": "s1", "moment": "1", "expires_at": "soon"},
        ),
        "follow",
    ),
    "a string where the stream goes": (
        lambda r, p: r.set(f"{p}{{gw}}:revocations", b"x"),
        "revocations",
    ),
}


@pytest.mark.parametrize("garbage", list(_GARBAGE))
def test_garbage_under_the_prefix_is_unavailable(
    garbage: str, server: RedisServer, prefix: str, store: RedisStore
) -> None:
    store.index_session(record("s1"))
    _, cursor = store.revocations()
    plant, victim = _GARBAGE[garbage]
    with server.client() as client:
        plant(client, prefix)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "sessions": store.sessions,
        "user sessions": lambda: store.sessions("oAlice"),
        "revoke user": lambda: store.revoke(users=["oAlice"], now=time.time()),
        "revocations": store.revocations,
        "follow": lambda: store.wait_for_revocations(cursor, 0.1),
    }
    with pytest.raises(StoreUnavailable, match=re.escape(store.description)) as raised:
        calls[victim]()
    assert "did not write" in str(raised.value) or "WRONGTYPE" in str(raised.value)


def test_the_store_holds_records_only(server: RedisServer, prefix: str, store: RedisStore) -> None:
    exercise(store)
    cookie = session_cookie("oAlice", unionid="uAlice")
    with server.client() as client:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
        layout = re.compile(
            re.escape(prefix) + r"(kv:.+|\{gw\}:(session:.+|sessions|user:.+|revocations))"
        )
        assert keys and all(layout.fullmatch(key) for key in keys), keys
        for key in keys:
            if ":session:" in key:
                assert json.loads(client.get(key) or b"").keys() == {
                    "sid", "subject", "unionid", "nickname", "app_id", "provider",
                    "signed_in_at", "expires_at", "client", "user_agent",
                }  # fmt: skip
    contents = server.dump()
    for secret in (cookie, SESSION_SECRET, APP_SECRET):
        assert secret.encode() not in contents


# -- how Redis is reached ---------------------------------------------------------------------


def test_a_unix_socket_and_a_database_number(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", unix_socket=True) as server:
        assert server.socket is not None
        url = f"unix://{server.socket}?db=3"
        store = RedisStore(url, key_prefix="u:", session_max_age=MAX_AGE)
        assert store.description == url
        exercise(store)
        with redis.Redis(unix_socket_path=str(server.socket), db=3) as client:
            assert client.exists("u:{gw}:revocations")
        with server.client() as client:
            assert not client.exists("u:{gw}:revocations")
        store.close()


def test_a_password_given_apart_from_the_url(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", password=PASSWORD) as server:
        store = open_store(server, "pw:")
        assert PASSWORD not in store.description
        exercise(store)
        for password in (None, "wrong-password-also-secret"):
            refused = open_store(server, "pw:", password=password)
            with pytest.raises(StoreUnavailable) as raised:
                refused.ping()
            assert "Authentication" in str(raised.value) or "NOAUTH" in str(raised.value)
            assert PASSWORD not in str(raised.value)
            assert "wrong-password-also-secret" not in str(raised.value)
    with pytest.raises(ValueError, match=re.escape("use state.password")) as raised:
        RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", session_max_age=MAX_AGE)
    assert PASSWORD not in str(raised.value)


def test_sentinel_finds_the_new_master_after_a_failover(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path / "master", password=PASSWORD) as master,
        RedisServer(tmp_path / "replica", password=PASSWORD, replica_of=master) as replica,
    ):
        replica.wait_for_sync()
        with RedisSentinel(tmp_path / "sentinel", master, replicas=(replica,)) as sentinel:
            sentinel.wait_for_replicas(1)
            store = RedisStore(
                "redis:///0",
                password=PASSWORD,
                sentinel={"master": sentinel.name, "hosts": sentinel.hosts},
                key_prefix="s:",
                session_max_age=MAX_AGE,
            )
            assert (
                store.description == f"redis sentinel master mymaster via {sentinel.hosts[0]}, db 0"
            )
            exercise(store)
            store.revoke(users=["oBeforeFailover"], now=time.time())
            _, cursor = store.revocations()
            replica.wait_for_sync()

            assert sentinel.failover() == replica.port
            # Within about a second the store writes to the new master, even while the old
            # one is still up and not yet a replica (a call may fail in between).
            failed_over = time.monotonic()
            with replica.client() as client:
                while client.get("s:kv:ledger:after") != b"wg1:on the new master":
                    assert time.monotonic() - failed_over < 3
                    with contextlib.suppress(StoreUnavailable):
                        store.put("ledger:after", b"on the new master", 60)
                    time.sleep(0.05)
            assert "oBeforeFailover" in store.revocations()[0].users
            store.revoke(users=["oAfterFailover"], now=time.time())
            changed = store.revocations_since(cursor)
            assert changed is not None and changed[0].users.keys() == {"oAfterFailover"}
            store.close()


def test_a_redis_cluster(tmp_path: Path) -> None:
    with RedisClusterNodes(tmp_path / "cluster") as cluster:
        store = RedisStore(cluster.url, cluster=True, key_prefix="c:", session_max_age=MAX_AGE)
        assert store.description == f"redis cluster via 127.0.0.1:{cluster.nodes[0].port}"
        exercise(store)
        for n in range(30):  # short-lived keys spread over the nodes' slots
            store.put(f"spread:{n}", str(n).encode(), 30)
        assert [store.get(f"spread:{n}") for n in range(30)] == [str(n).encode() for n in range(30)]
        holding = []
        for node in cluster.nodes:
            with node.client() as client:
                holding.append(client.dbsize() > 0)
        assert sum(holding) > 1
        store.close()
