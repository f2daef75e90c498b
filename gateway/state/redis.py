"""The shared state on Redis: for replicas on several machines.

Use it when more than one ``wechat-gateway serve`` must behave as one gateway; on one
machine the embedded SQLite store does the same job with nothing to run.

Reached as a single server (``redis://``, ``rediss://`` for TLS, ``unix://``), through
Sentinel (the master of a named service; the sentinels are asked again at most once a
second, so writes follow a failover even while the old master is still up), or as a Redis
Cluster. The password is given on its own, never inside the URL, and appears in no
description or error message (the sentinels themselves are asked without a password or
TLS; the master is reached with both, as configured). Every call is short: one-second
connect and read timeouts, no retries inside the client, so a dead Redis costs a request a
``StoreUnavailable`` (a 503) within a second or two, and the next call simply connects
afresh.

Keys, under ``key_prefix`` (``wechat-gateway:``)::

    wechat-gateway:kv:KEY              short-lived value, after a ``wg1:`` mark (SET NX PX,
                                       SET PX, GET)
    wechat-gateway:rate:KEY:W:START    a counter: the events of KEY in the window of W ms
                                       starting at START (unix ms); INCR and PEXPIRE in
                                       one script, expiring a few seconds after the window
    wechat-gateway:{gw}:session:SID    a session record (JSON), expiring with the session
    wechat-gateway:{gw}:sessions       sorted set: SID scored by its expiry (unix seconds)
    wechat-gateway:{gw}:user:ID        set of SIDs of an openid, unionid or wecom:USERID
    wechat-gateway:{gw}:revocations    stream: one entry per revocation

The ``{gw}`` hash tag keeps the index and the revocations in one Cluster slot, so they are
written together in one MULTI; the short-lived keys are touched one at a time and spread
over the slots, and so are the counters (each is one key: its script touches nothing
else). No key holds a cookie value or a token: records say who signed in where.

Revocations are a stream (XADD ``kind``/``target``/``moment``/``expires_at``), so they
persist with Redis's data and are followed by entry id: the cursor is the id of the last
entry read. ``wait_for_revocations`` blocks on XREAD for new entries on its own
connection, the stream's equivalent of a pub/sub subscription that cannot miss a message
sent while it was not listening. Entries older than ``session_max_age`` have expired and
are trimmed as new ones are added (XADD MINID). A cursor outside the stream's range (the
stream gone, trimmed past it, or behind it after a failover to a replica that lagged)
makes ``revocations_since`` answer None, and the caller reloads everything.

Failures, all ``StoreUnavailable`` (the caller's 503), named with their cause::

    redis.RedisError
    ├── ConnectionError, TimeoutError     Redis down, unreachable, too slow, wrong password
    ├── ResponseError
    │   ├── ReadOnlyError                 a replica (a Sentinel client then finds the new
    │   │                                 master on its next call)
    │   └── WRONGTYPE ...                 a key under the prefix of a type we never write
    └── ClusterError                      the cluster is down or moving slots
    redis.RedisClusterException           no cluster node reachable
    (our own check)                       a value under the prefix that we did not write
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gateway.state.base import (
    COUNTER_GRACE,
    Revocations,
    SessionRecord,
    StoreUnavailable,
    fixed_window,
    revocation_rows,
    window_left,
)
from gateway.state.redis_settings import check_redis_settings, parse_hosts, parse_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from redis.typing import EncodableT, FieldT

__all__ = ["RedisStore", "check_redis_settings"]

#: Connect and read timeout of every call but the blocking read, in seconds.
SOCKET_TIMEOUT: Final = 1.0
#: The longest ``wait_for_revocations`` blocks in one call.
_MAX_BLOCK: Final = 5.0
#: How often, at most, a Sentinel client asks which server is the master now, in seconds.
_MASTER_CHECK: Final = 1.0
#: Entries and records read per round trip.
_PAGE: Final = 500
#: Marks a short-lived value as ours: anything else under the prefix is refused.
_VALUE_MARK: Final = b"wg1:"
_STREAM_ID: Final = re.compile(r"(\d+)-(\d+)")
_RECORD_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(SessionRecord))
_NO_RETRY: Final = Retry(NoBackoff(), 0)
_START: Final = "0-0"
#: One event counted and the counter's expiry set, atomically: KEYS[1] the counter,
#: ARGV[1] its time to live in milliseconds. The expiry is relative, so Redis's own clock
#: does not need to agree with the gateway's.
_HIT: Final = """
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return count
"""

_Client = Redis | RedisCluster


# -- reading what Redis answers ---------------------------------------------------------------


class _Garbage(ValueError):
    """A value under the prefix that this store did not write."""


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Garbage("not UTF-8") from None
    raise _Garbage(f"{type(value).__name__} where text goes")


def _number(value: object) -> float:
    try:
        number = float(_text(value))
    except ValueError:
        raise _Garbage("not a number") from None
    if math.isnan(number):
        raise _Garbage("not a number")
    return number


def _many(reply: object) -> list[object]:
    """A list or set answer (ZRANGEBYSCORE, SMEMBERS, MGET, XREAD) as a list."""
    if reply is None:
        return []
    if not isinstance(reply, list | set | tuple):
        raise _Garbage(type(reply).__name__)
    return list(reply)


def _stream_id(value: object) -> tuple[int, int]:
    match = _STREAM_ID.fullmatch(_text(value))
    if match is None:
        raise _Garbage("stream id")
    return int(match[1]), int(match[2])


def _entries(reply: object) -> list[tuple[object, dict[bytes, bytes]]]:
    """XRANGE's answer as (id, fields) pairs."""
    if not isinstance(reply, list):
        raise _Garbage("stream reply")
    entries = []
    for item in reply:
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[1], dict):
            raise _Garbage("stream entry")
        entries.append((item[0], item[1]))
    return entries


def _add_revocation(found: Revocations, fields: dict[bytes, bytes], now: float) -> None:
    kind = fields.get(b"kind")
    target = _text(fields.get(b"target"))
    moment = _number(fields.get(b"moment"))
    expires_at = _number(fields.get(b"expires_at"))
    if kind not in {b"sid", b"user", b"all"}:
        raise _Garbage("revocation kind")
    if expires_at <= now:
        return
    if kind == b"sid":
        found.sids[target] = max(expires_at, found.sids.get(target, 0.0))
    elif kind == b"user":
        found.users[target] = max(moment, found.users.get(target, 0.0))
    else:
        found.everyone = max(found.everyone, moment)


def _record(sid: str, raw: object) -> SessionRecord:
    try:
        data = json.loads(_text(raw))
    except ValueError:
        raise _Garbage("session record not JSON") from None
    if not isinstance(data, dict) or data.keys() != _RECORD_FIELDS or data["sid"] != sid:
        raise _Garbage("session record")
    for name in ("sid", "subject", "nickname", "app_id", "provider", "client", "user_agent"):
        if not isinstance(data[name], str):
            raise _Garbage(name)
    if data["unionid"] is not None and not isinstance(data["unionid"], str):
        raise _Garbage("unionid")
    for name in ("signed_in_at", "expires_at"):
        if not isinstance(data[name], int) or isinstance(data[name], bool):
            raise _Garbage(name)
    return SessionRecord(**data)


# -- the store --------------------------------------------------------------------------------


class RedisStore:
    """``StateStore`` on Redis: a server, a Sentinel-managed master, or a Cluster."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        sentinel: Mapping[str, object] | None = None,
        cluster: bool = False,
        key_prefix: str = "wechat-gateway:",
        session_max_age: float,
        clock: Callable[[], float] = time.time,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        problems = check_redis_settings(url, sentinel, cluster, key_prefix=key_prefix)
        endpoint = parse_url(url, [], need_host=sentinel is None)
        if problems or endpoint is None:
            raise ValueError("; ".join(problems))
        self._endpoint = endpoint
        self._password = password or None
        self._cluster = cluster
        self._master: str | None = None
        self._sentinel_hosts: list[tuple[str, int]] = []
        if sentinel is not None:
            self._master = str(sentinel["master"])
            self._sentinel_hosts = parse_hosts(sentinel, [])
            hosts = ", ".join(f"{host}:{port}" for host, port in self._sentinel_hosts)
            scheme = "rediss" if endpoint.tls else "redis"
            self.description = (
                f"{scheme} sentinel master {self._master} via {hosts}, db {endpoint.db}"
            )
        elif cluster:
            scheme = "rediss" if endpoint.tls else "redis"
            self.description = f"{scheme} cluster via {endpoint.host}:{endpoint.port}"
        else:
            self.description = endpoint.describe()
        self.session_max_age = session_max_age
        self.clock = clock
        self.socket_timeout = socket_timeout
        self._kv = f"{key_prefix}kv:"
        self._rate = f"{key_prefix}rate:"
        tagged = f"{key_prefix}{{gw}}:"
        self._session = f"{tagged}session:"
        self._user = f"{tagged}user:"
        self._sessions = f"{tagged}sessions"
        self._stream = f"{tagged}revocations"
        self._lock = threading.Lock()
        self._sentinel: Sentinel | None = None
        self._main: _Client | None = None
        self._blocking: _Client | None = None
        self._master_checked = 0.0

    # -- connections ---------------------------------------------------------------------

    def _connect(self, read_timeout: float) -> _Client:
        """A client; only a Cluster client talks to Redis while being made."""
        endpoint = self._endpoint
        options: dict[str, Any] = {
            "password": self._password,
            "socket_timeout": read_timeout,
            "socket_connect_timeout": self.socket_timeout,
        }
        if endpoint.tls:
            options["ssl"] = True
        if self._cluster:
            return RedisCluster(host=endpoint.host, port=endpoint.port, retry=_NO_RETRY, **options)
        options["retry"] = _NO_RETRY
        if self._master is not None:
            if self._sentinel is None:
                self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                    self._sentinel_hosts,
                    sentinel_kwargs={
                        "socket_timeout": self.socket_timeout,
                        "socket_connect_timeout": self.socket_timeout,
                        "retry": _NO_RETRY,
                    },
                )
            master: Redis = self._sentinel.master_for(  # type: ignore[no-untyped-call]
                self._master, db=endpoint.db, **options
            )
            return master
        if endpoint.unix_path is not None:
            del options["socket_connect_timeout"]
            return Redis(unix_socket_path=endpoint.unix_path, db=endpoint.db, **options)
        return Redis(host=endpoint.host or "", port=endpoint.port, db=endpoint.db, **options)

    def _client(self) -> _Client:
        client = self._main
        if client is None:
            with self._lock:
                if self._main is None:
                    self._main = self._connect(self.socket_timeout)
                client = self._main
        if self._master is not None:
            self._follow_master()
        return client

    def _follow_master(self) -> None:
        """Ask the sentinels, once a second at most, which server is the master.

        A client only asks when it connects, and after a failover the old master, still
        up, takes writes until Sentinel has turned it into a replica: a revocation written
        then would be lost. Asking drops the idle connections to a master that is no
        longer one. A sentinel that does not answer changes nothing: the connections in
        use say whether the master still works."""
        now = time.monotonic()
        if now - self._master_checked < _MASTER_CHECK:
            return
        self._master_checked = now
        for client in (self._main, self._blocking):
            if isinstance(client, Redis) and isinstance(
                client.connection_pool, SentinelConnectionPool
            ):
                with suppress(RedisError):
                    client.connection_pool.get_master_address()  # type: ignore[no-untyped-call]

    def _blocking_client(self) -> _Client:
        """A client of its own for XREAD BLOCK: its read timeout outlasts the block."""
        client = self._blocking
        if client is None:
            with self._lock:
                if self._blocking is None:
                    self._blocking = self._connect(self.socket_timeout + _MAX_BLOCK)
                client = self._blocking
        return client

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Turn every failure of Redis, or of what it holds, into ``StoreUnavailable``."""
        try:
            yield
        except _Garbage as exc:
            raise StoreUnavailable(
                f"{self.description}: a value under the prefix it did not write ({exc})"
            ) from None
        except (RedisError, RedisClusterException, OSError, ValueError, TypeError) as exc:
            # ValueError and TypeError: a reply of a shape no command gives, or a socket
            # closed under a blocked read.
            raise StoreUnavailable(f"{self.description}: {self._scrub(exc)}") from None

    def _scrub(self, exc: BaseException) -> str:
        message = f"{type(exc).__name__}: {exc}"
        if self._password:
            message = message.replace(self._password, "***")
        return message

    # -- short-lived keys -----------------------------------------------------------------

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._talking():
            done = self._client().set(
                self._kv + key, _VALUE_MARK + value, px=_milliseconds(ttl), nx=True
            )
        return bool(done)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        with self._talking():
            self._client().set(self._kv + key, _VALUE_MARK + value, px=_milliseconds(ttl))

    def get(self, key: str) -> bytes | None:
        with self._talking():
            value = self._client().get(self._kv + key)
            if value is None:
                return None
            if not isinstance(value, bytes) or not value.startswith(_VALUE_MARK):
                raise _Garbage(f"short-lived value under {self._kv}{key}")
            return value[len(_VALUE_MARK) :]

    # -- counters -------------------------------------------------------------------------

    def hit(self, key: str, window: float, now: float) -> tuple[int, float]:
        start, end = fixed_window(window, now)
        counter = f"{self._rate}{key}:{end - start}:{start}"
        ttl = _milliseconds(end / 1000 - now + COUNTER_GRACE)
        with self._talking():
            count: object = self._client().eval(_HIT, 1, counter, str(ttl))
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise _Garbage(f"counter {counter}")
        return count, window_left(end, window, now)

    # -- sessions -------------------------------------------------------------------------

    def index_session(self, record: SessionRecord) -> None:
        ttl = record.expires_at - self.clock()
        if ttl <= 0:
            return
        # A user's set outlives each of its sessions: any session ends within max age.
        user_ttl = _milliseconds(max(ttl, self.session_max_age))
        with self._talking():
            pipe = self._client().pipeline(transaction=True)
            pipe.set(
                self._session + record.sid,
                json.dumps(dataclasses.asdict(record), ensure_ascii=False),
                px=_milliseconds(ttl),
            )
            pipe.zadd(self._sessions, {record.sid: record.expires_at})
            pipe.zremrangebyscore(self._sessions, "-inf", f"({self.clock()}")
            for user in {record.subject, record.unionid} - {None}:
                pipe.sadd(f"{self._user}{user}", record.sid)
                pipe.pexpire(f"{self._user}{user}", user_ttl)
            pipe.execute()

    def sessions(self, user: str | None = None) -> list[SessionRecord]:
        with self._talking():
            if user is None:
                sids = self._client().zrangebyscore(self._sessions, f"({self.clock()}", "+inf")
            else:
                sids = self._client().smembers(f"{self._user}{user}")
            records = self._records(_text(sid) for sid in _many(sids))
        if user is not None:
            records = [r for r in records if user in {r.subject, r.unionid}]
        revoked, _ = self.revocations()
        return revoked.active(records)

    def _records(self, sids: Iterable[str]) -> list[SessionRecord]:
        """The unexpired records of these sessions, by sign-in time (call while talking)."""
        wanted = sorted(set(sids))
        now = self.clock()
        records = []
        for start in range(0, len(wanted), _PAGE):
            page = wanted[start : start + _PAGE]
            values = self._client().mget([self._session + sid for sid in page])
            for sid, value in zip(page, _many(values), strict=True):
                if value is not None:
                    record = _record(sid, value)
                    if record.expires_at > now:
                        records.append(record)
        records.sort(key=lambda record: (record.signed_in_at, record.sid))
        return records

    def revoke(
        self,
        *,
        sids: Iterable[tuple[str, float]] = (),
        users: Iterable[str] = (),
        everyone: bool = False,
        now: float,
    ) -> int:
        by_id = dict(sids)
        users = list(users)
        with self._talking():
            client = self._client()
            if everyone:
                candidates = _many(client.zrangebyscore(self._sessions, f"({self.clock()}", "+inf"))
            else:
                candidates = list(by_id)
                for user in users:
                    candidates += _many(client.smembers(f"{self._user}{user}"))
            records = self._records(_text(sid) for sid in candidates)
        revoked, _ = self.revocations()
        ended, rows = revocation_rows(
            revoked.active(records),
            by_id.items(),
            users,
            everyone=everyone,
            now=now,
            keep_for=self.session_max_age,
        )
        if not rows:
            return 0
        # Every entry older than max age has expired; the server's ids are its clock.
        oldest = f"{max(0, int((self.clock() - self.session_max_age) * 1000))}-0"
        with self._talking():
            pipe = self._client().pipeline(transaction=True)
            for kind, target, at, until in rows:
                fields: dict[FieldT, EncodableT] = {
                    "kind": kind,
                    "target": target,
                    "moment": repr(at),
                    "expires_at": repr(until),
                }
                pipe.xadd(self._stream, fields, minid=oldest, approximate=True)
            for record in ended:
                pipe.delete(self._session + record.sid)
                pipe.zrem(self._sessions, record.sid)
                for name in {record.subject, record.unionid} - {None}:
                    pipe.srem(f"{self._user}{name}", record.sid)
            pipe.execute()
        return len(ended)

    # -- revocations ----------------------------------------------------------------------

    def revocations(self) -> tuple[Revocations, object]:
        found = Revocations()
        with self._talking():
            cursor = self._read_after(_START, found, inclusive=True)
        return found, cursor

    def revocations_since(self, cursor: object) -> tuple[Revocations, object] | None:
        if not isinstance(cursor, str) or _STREAM_ID.fullmatch(cursor) is None:
            return None
        with self._talking():
            pipe = self._client().pipeline(transaction=False)
            pipe.xrange(self._stream, "-", "+", count=1)
            pipe.xrevrange(self._stream, "+", "-", count=1)
            first, last = pipe.execute()
            if cursor != _START:
                seen = _stream_id(cursor)
                if not first or not last:
                    return None  # the stream is gone: the server lost it, or a new one
                if _stream_id(_entries(first)[0][0]) > seen:
                    return None  # trimmed past the cursor, or made anew since
                if _stream_id(_entries(last)[0][0]) < seen:
                    return None  # behind the cursor: a replica that lagged took over
            found = Revocations()
            cursor = self._read_after(cursor, found)
        return found, cursor

    def wait_for_revocations(
        self, cursor: object, timeout: float
    ) -> tuple[Revocations, object] | None:
        """Like ``revocations_since``, but when nothing is new, wait up to ``timeout``
        seconds (at most five) for the next revocation and answer as soon as it is added.

        This is what a pub/sub subscription would give, on the stream itself: XREAD BLOCK
        on a connection of its own, so a follower learns of a revocation within
        milliseconds, and one added while it was not listening is still read next time.
        """
        changed = self.revocations_since(cursor)
        if changed is None or changed[0]:
            return changed
        _, cursor = changed
        assert isinstance(cursor, str)
        block = max(1, int(min(timeout, _MAX_BLOCK) * 1000))
        found = Revocations()
        with self._talking():
            reply = self._blocking_client().xread({self._stream: cursor}, count=_PAGE, block=block)
            for stream in _many(reply):
                _, entries = _many(stream)
                cursor = self._take(_entries(entries), found, cursor)
        return found, cursor

    def _read_after(self, cursor: str, found: Revocations, *, inclusive: bool = False) -> str:
        """Read the stream after ``cursor`` into ``found``; the id of the last entry read,
        or ``cursor`` when there was none (call while talking)."""
        low = cursor if inclusive else f"({cursor}"
        while True:
            entries = _entries(self._client().xrange(self._stream, low, "+", count=_PAGE))
            cursor = self._take(entries, found, cursor)
            if len(entries) < _PAGE:
                return cursor
            low = f"({cursor}"

    def _take(
        self, entries: list[tuple[object, dict[bytes, bytes]]], found: Revocations, cursor: str
    ) -> str:
        now = self.clock()
        for entry_id, fields in entries:
            _stream_id(entry_id)
            _add_revocation(found, fields, now)
            cursor = _text(entry_id)
        return cursor

    # -- health -----------------------------------------------------------------------------

    def ping(self) -> None:
        with self._talking():
            self._client().ping()

    def close(self) -> None:
        with self._lock:
            clients = [client for client in (self._main, self._blocking) if client is not None]
            sentinel, self._main, self._blocking, self._sentinel = self._sentinel, None, None, None
        for client in clients:
            client.close()
            if isinstance(client, Redis):
                client.connection_pool.disconnect()
        if sentinel is not None:
            for server in sentinel.sentinels:
                server.close()


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))
