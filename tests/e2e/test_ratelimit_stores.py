"""The rate limit's counters (``StateStore.hit``) against the real stores, across
processes: a real ``redis-server`` (one server, a read-only replica, a Cluster, one
stopped) and one SQLite file opened by several processes.

Atomicity is shown the strong way: 8 processes hit one counter 50 times each, at once;
every count from 1 to 400 must be answered exactly once (a lost update would answer some
count twice, and end below 400).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.login.ratelimit import RateLimiter, client_key
from gateway.state.base import COUNTER_GRACE, StateStore, StoreUnavailable, fixed_window
from gateway.state.redis import RedisStore
from gateway.state.sqlite import SqliteStore
from tests.helpers.redis_server import RedisClusterNodes, RedisServer

PROCESSES = 8
HITS = 50
WINDOW = 60.0
_prefixes = (f"rate{n}:" for n in itertools.count())


def _now() -> float:
    """A moment well inside a window of ``WINDOW`` seconds (a second after its start), so
    a test's hits made at fixed moments around it cannot straddle two windows."""
    return math.floor(time.time() / WINDOW) * WINDOW + 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return next(_prefixes)


def _redis(server: RedisServer | RedisClusterNodes, prefix: str, **options: Any) -> RedisStore:
    return RedisStore(server.url, key_prefix=prefix, session_max_age=3600, **options)


# -- many processes at once ----------------------------------------------------------------


def _hammer(
    kind: str,
    where: str,
    prefix: str,
    key: str,
    now: float,
    barrier: Any,
    results: Any,
) -> None:
    """One process: its own store, ``HITS`` hits on ``key`` once every process is ready."""
    store: StateStore
    if kind == "redis":
        store = RedisStore(where, key_prefix=prefix, session_max_age=3600)
    else:
        store = SqliteStore(where, session_max_age=3600)
    store.ping()  # connected (and, for SQLite, the schema made) before the start
    barrier.wait(timeout=30)
    try:
        counts = [store.hit(key, WINDOW, now)[0] for _ in range(HITS)]
    except StoreUnavailable as exc:
        results.put(f"failed: {exc}")
        return
    finally:
        store.close()
    results.put(counts)


def _at_once(kind: str, where: str, prefix: str, key: str, now: float) -> list[int]:
    """Every count the ``PROCESSES`` processes were answered, sorted."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_hammer, args=(kind, where, prefix, key, now, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        answers = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    counts = []
    for answer in answers:
        assert isinstance(answer, list), answer
        assert answer == sorted(answer)  # each process sees its own hits count up
        counts += answer
    return sorted(counts)


@pytest.mark.slow
def test_redis_counts_every_hit_of_8_processes_exactly_once(
    server: RedisServer, prefix: str
) -> None:
    now = _now()
    counts = _at_once("redis", server.url, prefix, "ratelimit:login:shared", now)
    assert counts == list(range(1, PROCESSES * HITS + 1))
    store = _redis(server, prefix)
    assert store.hit("ratelimit:login:shared", WINDOW, now)[0] == PROCESSES * HITS + 1


@pytest.mark.slow
def test_one_sqlite_file_counts_every_hit_of_8_processes_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    now = _now()
    counts = _at_once("sqlite", str(path), "", "ratelimit:login:shared", now)
    assert counts == list(range(1, PROCESSES * HITS + 1))
    store = SqliteStore(path, session_max_age=3600)
    assert store.hit("ratelimit:login:shared", WINDOW, now)[0] == PROCESSES * HITS + 1
    assert store.hit("ratelimit:login:other", WINDOW, now)[0] == 1


# -- Redis ------------------------------------------------------------------------------------


def test_redis_counts_in_fixed_windows(server: RedisServer, prefix: str) -> None:
    store = _redis(server, prefix)
    now = _now()
    assert store.hit("k", WINDOW, now) == (1, WINDOW - 1)
    assert store.hit("k", WINDOW, now + 10) == (2, WINDOW - 11)
    assert store.hit("k", WINDOW, now + 58.5) == (3, pytest.approx(0.5))
    assert store.hit("k", WINDOW, now + 59) == (1, WINDOW)  # the next window
    assert store.hit("other", WINDOW, now)[0] == 1
    assert store.hit("k", 3600, now)[0] == 1  # another length, another counter
    assert store.hit("k", WINDOW, now + 1)[0] == 4


def test_redis_counters_live_under_the_prefix_until_just_after_their_window(
    server: RedisServer, prefix: str
) -> None:
    store = _redis(server, prefix)
    now = time.time()
    start, end = fixed_window(WINDOW, now)
    key = client_key("203.0.113.7")
    store.hit(key, WINDOW, now)
    with server.client() as client:
        keys = [k.decode() for k in client.keys(f"{prefix}*")]
        assert keys == [f"{prefix}rate:{key}:{end - start}:{start}"]
        assert client.get(keys[0]) == b"1"
        ttl = client.pttl(keys[0]) / 1000
    # Relative to Redis's clock: the window's rest, and the grace.
    assert 0 < ttl <= end / 1000 - now + COUNTER_GRACE
    assert ttl > end / 1000 - time.time() + COUNTER_GRACE - 1
    assert b"203.0.113" not in server.dump()


@pytest.mark.slow
def test_redis_counters_expire(server: RedisServer, prefix: str) -> None:
    store = _redis(server, prefix)
    now = time.time()
    store.hit("k", 0.2, now)
    with server.client() as client:
        assert client.keys(f"{prefix}*")
        deadline = time.monotonic() + COUNTER_GRACE + 3
        while client.keys(f"{prefix}*") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.keys(f"{prefix}*") == []


def test_limiters_on_two_replicas_share_one_limit(server: RedisServer, prefix: str) -> None:
    now = _now()

    def replica() -> RateLimiter:
        return RateLimiter(_redis(server, prefix), 3, WINDOW, clock=lambda: now)

    one, two = replica(), replica()
    assert [one.check("198.51.100.9"), two.check("198.51.100.9"), one.check("198.51.100.9")] == [
        None,
        None,
        None,
    ]
    assert two.check("198.51.100.9") == WINDOW - 1
    assert one.check("198.51.100.9") == WINDOW - 1
    assert one.check("198.51.100.10") is None
    assert two.check("198.51.100.9", "callback") is None


def test_garbage_under_a_counter_is_unavailable(server: RedisServer, prefix: str) -> None:
    store = _redis(server, prefix)
    now = _now()
    start, end = fixed_window(WINDOW, now)
    with server.client() as client:
        client.set(f"{prefix}rate:k:{end - start}:{start}", b"not a number")
        client.sadd(f"{prefix}rate:s:{end - start}:{start}", b"member")
    with pytest.raises(StoreUnavailable, match="not an integer"):
        store.hit("k", WINDOW, now)
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        store.hit("s", WINDOW, now)


def test_a_read_only_replica_refuses_to_count(
    tmp_path: Path, server: RedisServer, prefix: str
) -> None:
    with RedisServer(tmp_path / "replica", replica_of=server) as replica:
        replica.wait_for_sync()
        with pytest.raises(StoreUnavailable, match=r"ReadOnly|READONLY|read only"):
            _redis(replica, prefix).hit("k", WINDOW, time.time())


def test_a_stopped_redis_is_unavailable_quickly_and_the_limiter_fails_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = _redis(server, "p:")
        now = _now()
        clock = [now]
        limiter = RateLimiter(store, 1, WINDOW, clock=lambda: clock[0])
        assert limiter.check("192.0.2.1") is None
        assert limiter.check("192.0.2.1") == WINDOW - 1
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=re.escape(server.url)):
            store.hit("k", WINDOW, now)
        assert time.monotonic() - started < 2.0
        assert limiter.check("192.0.2.1") is None  # open, not 429 and not an error
        assert "rate limit not enforced" in caplog.text
        server.start()
        clock[0] += 10  # after the back-off
        assert limiter.check("192.0.2.1") == WINDOW - 11  # the count survived the restart
        assert "rate limit enforced again" in caplog.text


@pytest.mark.slow
def test_a_redis_cluster_counts_keys_spread_over_its_nodes(tmp_path: Path) -> None:
    with RedisClusterNodes(tmp_path / "cluster") as cluster:
        store = _redis(cluster, "c:", cluster=True)
        now = _now()
        for n in range(30):
            assert store.hit(f"ratelimit:login:{n}", WINDOW, now)[0] == 1
        for n in range(30):
            assert store.hit(f"ratelimit:login:{n}", WINDOW, now) == (2, WINDOW - 1)
        holding = []
        for node in cluster.nodes:
            with node.client() as client:
                keys = client.keys("*")
                assert all(key.startswith(b"c:rate:ratelimit:login:") for key in keys)
                holding.append(len(keys))
        assert sum(holding) == 30 and sum(1 for n in holding if n) > 1
        store.close()
