"""The embedded state store and each worker's copy of the revocations, in process."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.auth.session import Session
from gateway.state.base import Revocations, SessionRecord, StoreUnavailable
from gateway.state.sqlite import SqliteStore
from gateway.state.watch import RevocationWatcher

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path, clock: Clock) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db", session_max_age=3600, clock=clock)


def _record(sid: str, subject: str, unionid: str | None = None, at: float = NOW) -> SessionRecord:
    return SessionRecord(
        sid,
        subject,
        unionid,
        "nick",
        "wxapp",
        "wechat",
        int(at),
        int(at) + 600,
        "10.0.0.1",
        "agent",
    )


def test_keys_expire_and_only_the_first_add_wins(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    assert store.add("k", b"1", 10)
    assert not store.add("k", b"2", 10)
    assert store.get("k") == b"1"
    store.put("k", b"3", 10)
    assert store.get("k") == b"3"
    clock.now += 11
    assert store.get("k") is None
    assert store.add("k", b"4", 10)


def test_the_index_lists_active_unrevoked_sessions_by_user(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    store.index_session(_record("s1", "oA", "uA"))
    store.index_session(_record("s2", "oA", "uA"))
    store.index_session(_record("s3", "oB"))
    assert [r.sid for r in store.sessions("oA")] == ["s1", "s2"]
    assert [r.sid for r in store.sessions("uA")] == ["s1", "s2"]
    assert store.revoke(sids=[("s1", NOW + 600)], now=clock.now) == 1
    assert [r.sid for r in store.sessions()] == ["s2", "s3"]
    assert store.revoke(users=["uA"], now=clock.now) == 1
    assert [r.sid for r in store.sessions()] == ["s3"]
    clock.now += 601
    assert store.sessions() == []


def test_revocations_are_followed_from_a_cursor(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    other = _store(tmp_path, clock)  # another worker on the same file
    revoked, cursor = store.revocations()
    assert len(revoked) == 0
    other.revoke(sids=[("s9", NOW + 600)], users=["oZ"], now=clock.now)
    changed = store.revocations_since(cursor)
    assert changed is not None
    new, cursor = changed
    assert new.sids == {"s9": NOW + 600} and new.users == {"oZ": float(int(NOW))}
    assert store.revocations_since(cursor) == (Revocations(), cursor)
    assert store.revocations_since(cursor + 100) is None  # a cursor the store cannot know


def test_a_user_revocation_ends_earlier_sessions_not_later_ones() -> None:
    revoked = Revocations(users={"oA": NOW})
    assert revoked.revokes("", ["oA"], NOW - 1)
    assert not revoked.revokes("", ["oA"], NOW)  # signed in in the second of the revocation
    assert not revoked.revokes("", ["oB"], NOW - 1)
    assert Revocations(everyone=NOW).revokes("x", [], NOW - 1)


def test_a_replaced_file_is_noticed_and_reopened(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    assert store.add("k", b"1", 60)
    shutil.move(tmp_path / "state.db", tmp_path / "moved.db")
    (tmp_path / "state.db").mkdir()
    with pytest.raises(StoreUnavailable):
        store.get("k")
    (tmp_path / "state.db").rmdir()
    shutil.move(tmp_path / "moved.db", tmp_path / "state.db")
    assert store.get("k") == b"1"


def _session(sid: str, openid: str = "oA") -> Session:
    return Session(openid, "wxapp", None, "n", "", int(NOW) - 10, int(NOW) + 600, sid=sid)


def test_the_watcher_follows_and_never_forgets(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    monotonic = Clock(100.0)
    watcher = RevocationWatcher(store, max_staleness=30, clock=monotonic, wall_clock=clock)
    watcher.refresh()
    assert not watcher.revokes(_session("s1"))
    store.revoke(sids=[("s1", NOW + 600)], now=clock.now)
    watcher.refresh()
    assert watcher.revokes(_session("s1")) and not watcher.revokes(_session("s2"))
    # The file is replaced by an empty one: what this worker knew still holds.
    store.close()
    (tmp_path / "state.db").unlink()
    watcher.refresh()  # the cursor is unknown to the new file: reload...
    watcher.refresh()  # ...and merge
    assert watcher.revokes(_session("s1"))


def test_the_watcher_goes_stale_when_the_store_is_away(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    monotonic = Clock(100.0)
    watcher = RevocationWatcher(store, max_staleness=30, clock=monotonic, wall_clock=clock)
    watcher.refresh()
    (tmp_path / "state.db").unlink()
    (tmp_path / "state.db").mkdir()
    monotonic.now += 10
    watcher.refresh()
    assert watcher.failure is not None and not watcher.stale
    monotonic.now += 21
    assert watcher.stale
    (tmp_path / "state.db").rmdir()
    watcher.refresh()
    assert watcher.failure is None and not watcher.stale


def test_a_watcher_that_never_reached_the_store_is_stale(tmp_path: Path) -> None:
    """No revocations were ever loaded: no session may be trusted (a worker that starts
    while the store is away must not serve a session revoked before it started)."""
    clock = Clock()
    (tmp_path / "state.db").mkdir()  # a store that cannot be opened
    store = _store(tmp_path, clock)
    watcher = RevocationWatcher(store, max_staleness=30, clock=Clock(100.0), wall_clock=clock)
    assert watcher.stale
    watcher.refresh()
    assert watcher.failure is not None and watcher.stale
    (tmp_path / "state.db").rmdir()
    watcher.refresh()
    assert watcher.failure is None and not watcher.stale


def test_a_database_locked_by_another_writer_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    assert store.add("k", b"1", 60)  # the file and its schema exist
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            store.add("k2", b"2", 60)
        assert time.monotonic() - start < 5
        assert store.get("k") == b"1"  # readers are not blocked by a writer (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.add("k2", b"2", 60)  # and writes work again once the lock is gone
