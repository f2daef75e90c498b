"""The embedded state store: one SQLite file shared by every worker of one machine.

The standard library's ``sqlite3`` in WAL mode: readers never wait for the writer, and
every worker process opens its own connection (after the fork; a connection is never
shared across processes). Writes are short transactions; a lock held by another worker is
waited for up to ``busy_timeout``, after which the call fails as ``StoreUnavailable``,
like a locked, deleted or full database file does.

Tables: ``kv`` (short-lived keys with their expiry), ``counters`` (one row per key and
fixed window: ``hit`` increments it in one immediate transaction, which also drops that
key's ended windows), ``sessions`` (the index), and ``revocations`` (append-only,
numbered: ``revocations_since`` reads the rows after a number). Expired rows are swept at
most once a minute per process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.server.greenlets import off_hub
from gateway.state.base import (
    COUNTER_GRACE,
    Revocations,
    SessionRecord,
    StoreUnavailable,
    fixed_window,
    revocation_rows,
    window_left,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL,
    window_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, window_ms, start_ms)
);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    unionid TEXT,
    nickname TEXT NOT NULL,
    app_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    signed_in_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    client TEXT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_subject ON sessions (subject);
CREATE INDEX IF NOT EXISTS sessions_unionid ON sessions (unionid);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    moment REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""
log = logging.getLogger("gateway.state")

_SWEEP_EVERY = 60.0
_BUSY_TIMEOUT = 2.0


class SqliteStore:
    """``StateStore`` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        session_max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.description = f"sqlite://{self.path}"
        self.session_max_age = session_max_age
        self.clock = clock
        self._local: dict[int, sqlite3.Connection] = {}
        self._files: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._swept = 0.0

    # -- connections ---------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This process's (and thread's) connection, opened and the schema made on first
        use. A connection must not cross a fork, so it is keyed by process and thread.

        An open connection keeps working on a file that was deleted or replaced, and what
        it wrote would be gone at the next start; so the file is looked at on every call,
        and a connection to a file no longer at ``path`` is closed and opened again."""
        key = hash((os.getpid(), threading.get_native_id()))
        connection = self._local.get(key)
        try:
            stat = os.stat(self.path)
            identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except OSError:
            identity = None
        if connection is not None and identity != self._files.get(key):
            log.warning("%s was moved or replaced: opening it again", self.description)
            with self._lock:
                self._local.pop(key, None)
            connection.close()
            connection = None
        if connection is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
                stat = os.stat(self.path)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"{self.description}: {exc}") from None
            with self._lock:
                self._local[key] = connection
                self._files[key] = (stat.st_dev, stat.st_ino)
        return connection

    def _run(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """One statement's rows; off the gevent hub, since SQLite may wait for a lock."""
        return off_hub(self._run_here, sql, tuple(args))

    def _run_here(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._db().execute(sql, args).fetchall()
        except (sqlite3.Error, UnicodeError, OverflowError) as exc:
            raise StoreUnavailable(f"{self.description}: {exc}") from None

    def _transaction(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run statements in one immediate transaction; the row count of each."""
        return off_hub(self._transaction_here, list(statements))

    def _transaction_here(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                counts = [db.execute(sql, args).rowcount for sql, args in statements]
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (sqlite3.Error, UnicodeError, OverflowError) as exc:
            raise StoreUnavailable(f"{self.description}: {exc}") from None
        return counts

    def _sweep(self, now: float) -> None:
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        self._transaction(
            [
                ("DELETE FROM kv WHERE expires_at <= ?", (now,)),
                ("DELETE FROM counters WHERE expires_at <= ?", (now,)),
                ("DELETE FROM sessions WHERE expires_at <= ?", (now,)),
                ("DELETE FROM revocations WHERE expires_at <= ?", (now,)),
            ]
        )

    # -- short-lived keys -------------------------------------------------------------------

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = self.clock()
        self._sweep(now)
        _, inserted = self._transaction(
            [
                ("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (key, now)),
                ("INSERT OR IGNORE INTO kv VALUES (?, ?, ?)", (key, value, now + ttl)),
            ]
        )
        return inserted == 1

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._run("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, self.clock() + ttl))

    def get(self, key: str) -> bytes | None:
        row = self._run(
            "SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, self.clock())
        )
        if not row:
            return None
        value = row[0][0]
        if not isinstance(value, bytes):
            raise StoreUnavailable(f"{self.description}: a value it did not write under {key}")
        return value

    # -- counters ---------------------------------------------------------------------------

    def hit(self, key: str, window: float, now: float) -> tuple[int, float]:
        start, end = fixed_window(window, now)
        self._sweep(self.clock())
        count = off_hub(self._hit_here, key, end - start, start, end / 1000 + COUNTER_GRACE, now)
        return count, window_left(end, window, now)

    def _hit_here(self, key: str, width: int, start: int, expires_at: float, now: float) -> int:
        """Drop this key's ended windows and count one in this one, in one immediate
        transaction: the write lock is taken first, so no other process counts between
        the increment and the read."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM counters WHERE key = ? AND expires_at <= ?", (key, now))
                db.execute(
                    "INSERT INTO counters VALUES (?, ?, ?, 1, ?) ON CONFLICT"
                    " (key, window_ms, start_ms) DO UPDATE SET count = count + 1",
                    (key, width, start, expires_at),
                )
                row = db.execute(
                    "SELECT count FROM counters WHERE key = ? AND window_ms = ? AND start_ms = ?",
                    (key, width, start),
                ).fetchone()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (sqlite3.Error, UnicodeError, OverflowError) as exc:
            raise StoreUnavailable(f"{self.description}: {exc}") from None
        if row is None or not isinstance(row[0], int) or row[0] < 1:
            raise StoreUnavailable(f"{self.description}: a counter it did not write under {key}")
        count: int = row[0]
        return count

    # -- sessions ---------------------------------------------------------------------------

    def index_session(self, record: SessionRecord) -> None:
        self._run(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.sid,
                record.subject,
                record.unionid,
                record.nickname,
                record.app_id,
                record.provider,
                record.signed_in_at,
                record.expires_at,
                record.client,
                record.user_agent,
            ),
        )

    def sessions(self, user: str | None = None) -> list[SessionRecord]:
        now = self.clock()
        if user is None:
            rows = self._run(
                "SELECT * FROM sessions WHERE expires_at > ? ORDER BY signed_in_at", (now,)
            )
        else:
            rows = self._run(
                "SELECT * FROM sessions WHERE expires_at > ? AND (subject = ? OR unionid = ?)"
                " ORDER BY signed_in_at",
                (now, user, user),
            )
        try:
            records = [SessionRecord(*row) for row in rows]
        except (sqlite3.Error, TypeError) as exc:
            raise StoreUnavailable(f"{self.description}: {exc}") from None
        revoked, _ = self.revocations()
        return revoked.active(records)

    def revoke(
        self,
        *,
        sids: Iterable[tuple[str, float]] = (),
        users: Iterable[str] = (),
        everyone: bool = False,
        now: float,
    ) -> int:
        ended, rows = revocation_rows(
            self.sessions(),
            sids,
            list(users),
            everyone=everyone,
            now=now,
            keep_for=self.session_max_age,
        )
        if rows:
            insert = "INSERT INTO revocations (kind, target, moment, expires_at) VALUES (?,?,?,?)"
            self._transaction([(insert, row) for row in rows])
        return len(ended)

    def revocations(self) -> tuple[Revocations, object]:
        return self._read_revocations(0) or (Revocations(), 0)

    def revocations_since(self, cursor: object) -> tuple[Revocations, object] | None:
        if not isinstance(cursor, int):
            return None
        newest = self._run("SELECT max(seq) FROM revocations")
        if not newest or (newest[0][0] or 0) < cursor:
            return None  # the table was emptied or the file replaced: reload everything
        return self._read_revocations(cursor)

    def _read_revocations(self, after: int) -> tuple[Revocations, object] | None:
        rows = self._run(
            "SELECT seq, kind, target, moment, expires_at FROM revocations"
            " WHERE seq > ? AND expires_at > ? ORDER BY seq",
            (after, self.clock()),
        )
        found = Revocations()
        cursor = after
        try:
            for seq, kind, target, moment, expires_at in rows:
                cursor = max(cursor, int(seq))
                if kind == "sid":
                    found.sids[str(target)] = float(expires_at)
                elif kind == "user":
                    found.users[str(target)] = max(float(moment), found.users.get(target, 0.0))
                elif kind == "all":
                    found.everyone = max(found.everyone, float(moment))
                else:
                    raise ValueError(kind)
        except (TypeError, ValueError):
            raise StoreUnavailable(f"{self.description}: a revocation it did not write") from None
        return found, cursor

    def ping(self) -> None:
        self._run("SELECT 1")

    def close(self) -> None:
        with self._lock:
            connections, self._local = list(self._local.values()), {}
        for connection in connections:
            connection.close()
