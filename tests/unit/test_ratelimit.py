"""The sign-in rate limit in process: ``parse_rate``, the store's fixed-window counters
(``SqliteStore.hit``) and ``RateLimiter`` on a real SQLite store with a fake clock.

Across processes and on Redis: ``tests/e2e/test_ratelimit_stores.py``.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.login.ratelimit import BACKOFF, RateLimiter, client_key, parse_rate
from gateway.state.base import COUNTER_GRACE, StoreUnavailable, fixed_window
from gateway.state.sqlite import SqliteStore

#: A multiple of 3600: the windows of the tests start here.
NOW = 1_700_002_800.0
ADDRESS = "203.0.113.7"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db", session_max_age=3600, clock=clock)


def _rows(store: SqliteStore) -> list[tuple[str, int, int, int, float]]:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT * FROM counters ORDER BY key, start_ms").fetchall()


# -- parse_rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20/60s", (20, 60.0)),
        ("100/1h", (100, 3600.0)),
        ("0/1s", (0, 1.0)),
        ("5/250ms", (5, 0.25)),
        ("3/90", (3, 90.0)),
        (" 10 / 15m ", (10, 900.0)),
        ("1/7d", (1, 604800.0)),
    ],
)
def test_parse_rate_reads_n_per_duration(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("20", "the / is missing"),
        ("20 per 60s", "the / is missing"),
        ("", "the / is missing"),
        ("-1/60s", "N must not be negative"),
        ("1.5/60s", "N must be a whole number"),
        ("ten/60s", "N must be a whole number"),
        ("/60s", "N must be a whole number"),
        ("\uff12\uff10/60s", "N must be a whole number"),  # full-width digits
        ("20/", "the duration is missing"),
        ("20/0s", "at least 1ms"),
        ("20/0", "at least 1ms"),
        ("20/0.1ms", "at least 1ms"),
        ("20/-5s", "the duration must not be negative"),
        ("20/60x", "DURATION must be a duration"),
        ("20/60s/2", "DURATION must be a duration"),
        ("20/99999d", "DURATION must be at most"),
    ],
)
def test_parse_rate_refuses_anything_else_and_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match='must be "N/DURATION"') as raised:
        parse_rate(text)
    assert why in str(raised.value)


def test_parse_rate_refuses_what_is_not_text() -> None:
    with pytest.raises(ValueError, match='must be "N/DURATION"'):
        parse_rate(20)  # type: ignore[arg-type]


def test_parse_rate_messages_do_not_repeat_the_value() -> None:
    with pytest.raises(ValueError) as raised:
        parse_rate("hunter2-secret/60s")
    assert "hunter2" not in str(raised.value)


# -- the store's counters ------------------------------------------------------------------


def test_fixed_windows_start_at_multiples_of_the_window() -> None:
    assert fixed_window(60, NOW) == (int(NOW * 1000), int(NOW * 1000) + 60_000)
    assert fixed_window(60, NOW + 59.999) == fixed_window(60, NOW)
    assert fixed_window(60, NOW + 60) == (int(NOW * 1000) + 60_000, int(NOW * 1000) + 120_000)
    assert fixed_window(0.25, 10.3) == (10_250, 10_500)
    assert fixed_window(7, 15) == (14_000, 21_000)
    for bad in (0, 0.0004, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="at least a millisecond"):
            fixed_window(bad, NOW)


def test_hit_counts_in_the_window_and_says_when_it_ends(store: SqliteStore) -> None:
    assert store.hit("k", 60, NOW) == (1, 60.0)
    assert store.hit("k", 60, NOW + 10) == (2, 50.0)
    count, left = store.hit("k", 60, NOW + 59.5)
    assert (count, left) == (3, pytest.approx(0.5))
    # The next window starts afresh.
    assert store.hit("k", 60, NOW + 60) == (1, 60.0)
    assert store.hit("k", 60, NOW + 61) == (2, 59.0)


def test_hit_counts_keys_and_window_lengths_apart(store: SqliteStore) -> None:
    assert store.hit("a", 60, NOW)[0] == 1
    assert store.hit("a", 60, NOW)[0] == 2
    assert store.hit("b", 60, NOW)[0] == 1
    # Another length is another counter, even where the windows start together.
    assert store.hit("a", 3600, NOW) == (1, 3600.0)
    assert store.hit("a", 60, NOW)[0] == 3


def test_a_caller_whose_clock_is_behind_counts_in_its_own_window(store: SqliteStore) -> None:
    assert store.hit("k", 60, NOW + 60)[0] == 1
    assert store.hit("k", 60, NOW + 59.9)[0] == 1  # the window before, not reset, not mixed
    assert store.hit("k", 60, NOW + 60.1)[0] == 2


def test_ended_windows_are_pruned(store: SqliteStore, clock: Clock) -> None:
    store.hit("k", 60, NOW)
    store.hit("k", 60, NOW)
    store.hit("other", 60, NOW)
    assert [(r[0], r[3]) for r in _rows(store)] == [("k", 2), ("other", 1)]
    assert _rows(store)[0][4] == NOW + 60 + COUNTER_GRACE
    # The key's own ended windows go with its next hit.
    store.hit("k", 60, NOW + 60 + COUNTER_GRACE)
    assert [(r[0], r[2], r[3]) for r in _rows(store)] == [
        ("k", int(NOW * 1000) + 60_000, 1),
        ("other", int(NOW * 1000), 1),
    ]
    # Every other ended window with the minute's sweep.
    clock.now = NOW + 3600
    store.hit("third", 60, clock.now)
    assert [r[0] for r in _rows(store)] == ["third"]


def test_hit_refuses_a_window_under_a_millisecond(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="millisecond"):
        store.hit("k", 0, NOW)


def test_hit_on_an_unusable_file_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    store = SqliteStore(tmp_path / "state.db", session_max_age=3600)
    with pytest.raises(StoreUnavailable):
        store.hit("k", 60, NOW)


def test_hit_on_a_file_it_did_not_write_is_store_unavailable(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("CREATE TABLE counters (something TEXT)")
    store = SqliteStore(tmp_path / "state.db", session_max_age=3600)
    with pytest.raises(StoreUnavailable, match=r"state\.db: no such column"):
        store.hit("k", 60, NOW)


def test_counters_are_shared_by_stores_on_the_same_file(tmp_path: Path, clock: Clock) -> None:
    first = SqliteStore(tmp_path / "state.db", session_max_age=3600, clock=clock)
    second = SqliteStore(tmp_path / "state.db", session_max_age=3600, clock=clock)
    assert first.hit("k", 60, NOW)[0] == 1
    assert second.hit("k", 60, NOW)[0] == 2
    assert first.hit("k", 60, NOW)[0] == 3


# -- client keys -----------------------------------------------------------------------------


def test_the_key_is_a_digest_of_the_address_by_scope() -> None:
    key = client_key(ADDRESS)
    assert key.startswith("ratelimit:login:")
    assert len(key.rsplit(":", 1)[1]) == 32
    assert ADDRESS not in key and "203" not in key
    assert client_key(ADDRESS) == key
    assert client_key("203.0.113.8") != key
    assert client_key(ADDRESS, "callback") == key.replace(":login:", ":callback:")


def test_one_client_one_key_whatever_address_it_shows() -> None:
    assert client_key("::ffff:203.0.113.7") == client_key(ADDRESS)
    assert client_key(" 203.0.113.7 ") == client_key(ADDRESS)
    # An IPv6 client is its /64.
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert client_key("[2001:db8:1:2::1]") == client_key("2001:db8:1:2::5")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    # Not an IP address: counted as given.
    assert client_key("") != client_key("unix")


# -- RateLimiter -----------------------------------------------------------------------------


def test_the_limit_allows_n_per_window_then_says_when_to_retry(
    store: SqliteStore, clock: Clock
) -> None:
    limiter = RateLimiter(store, 3, 60, clock=clock)
    assert limiter.enabled
    assert [limiter.check(ADDRESS) for _ in range(3)] == [None, None, None]
    clock.now = NOW + 20.2
    assert limiter.check(ADDRESS) == 40  # ceil(39.8)
    clock.now = NOW + 59.01
    assert limiter.check(ADDRESS) == 1  # ceil(0.99)
    clock.now = NOW + 59.999
    assert limiter.check(ADDRESS) == 1  # never 0
    # The next window.
    clock.now = NOW + 60
    assert [limiter.check(ADDRESS) for _ in range(4)] == [None, None, None, 60]


def test_clients_and_scopes_are_limited_apart(store: SqliteStore, clock: Clock) -> None:
    limiter = RateLimiter(store, 1, 60, clock=clock)
    assert limiter.check(ADDRESS) is None
    assert limiter.check(ADDRESS) == 60
    assert limiter.check("198.51.100.1") is None
    assert limiter.check(ADDRESS, "callback") is None
    assert limiter.check(ADDRESS, "callback") == 60
    assert limiter.check("2001:db8::1") is None
    assert limiter.check("2001:db8::2") == 60  # the same /64


def test_limiters_sharing_a_store_share_the_count(tmp_path: Path, clock: Clock) -> None:
    # Two workers: each its own store object on the one file.
    def worker() -> RateLimiter:
        store = SqliteStore(tmp_path / "s.db", session_max_age=3600, clock=clock)
        return RateLimiter(store, 2, 60, clock=clock)

    one, two = worker(), worker()
    assert one.check(ADDRESS) is None
    assert two.check(ADDRESS) is None
    assert one.check(ADDRESS) == 60
    assert two.check(ADDRESS) == 60


def test_the_store_never_holds_the_address(store: SqliteStore, clock: Clock) -> None:
    limiter = RateLimiter(store, 5, 60, clock=clock)
    limiter.check(ADDRESS)
    limiter.check("2001:db8:1:2::77")
    keys = [row[0] for row in _rows(store)]
    assert keys == sorted([client_key(ADDRESS), client_key("2001:db8:1:2::77")])
    data = store.path.read_bytes() + Path(f"{store.path}-wal").read_bytes()
    for needle in (b"203.0.113.7", b"2001:db8", b"203.0.113"):
        assert needle not in data


class Unreachable:
    """A store that cannot be reached until told otherwise, counting its calls."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = True
        self.calls = 0

    def hit(self, key: str, window: float, now: float) -> tuple[int, float]:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("sqlite:///nowhere: unable to open database file")
        return self.store.hit(key, window, now)


def test_zero_is_no_limit_and_never_asks_the_store(clock: Clock) -> None:
    class NoStore:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the store was asked for {name}")

    limiter = RateLimiter(NoStore(), 0, 1, clock=clock)  # type: ignore[arg-type]
    assert not limiter.enabled
    assert all(limiter.check(ADDRESS) is None for _ in range(100))


def test_an_unreachable_store_fails_open_and_warns_once_per_outage(
    store: SqliteStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Unreachable(store)
    limiter = RateLimiter(flaky, 1, 60, clock=clock)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="gateway")
    assert [limiter.check(ADDRESS) for _ in range(5)] == [None] * 5
    # Asked once, then left alone for the back-off: no request pays a second timeout.
    assert flaky.calls == 1
    clock.now += BACKOFF
    assert limiter.check(ADDRESS) is None
    assert flaky.calls == 2
    warnings = [r for r in caplog.records if r.name == "gateway.login"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "rate limit not enforced" in warnings[0].getMessage()
    assert "sqlite:///nowhere" in warnings[0].getMessage()
    assert ADDRESS not in warnings[0].getMessage()
    # Back: enforced again, said once.
    flaky.down = False
    clock.now += BACKOFF
    assert limiter.check(ADDRESS) is None
    assert limiter.check(ADDRESS) == pytest.approx(60 - 2 * BACKOFF)
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.login"]
    assert len(messages) == 2
    assert "enforced again" in messages[1]
    # A second outage warns again.
    flaky.down = True
    clock.now += BACKOFF
    assert limiter.check(ADDRESS) is None
    assert len([r for r in caplog.records if r.name == "gateway.login"]) == 3


def test_the_limiter_refuses_impossible_settings(store: SqliteStore) -> None:
    for limit in (-1, 1.5, True):
        with pytest.raises(ValueError, match="whole number"):
            RateLimiter(store, limit, 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="millisecond"):
        RateLimiter(store, 5, 0)
    assert RateLimiter(store, 0, 0).check(ADDRESS) is None  # off: the window does not matter


def test_parse_rate_feeds_the_limiter(store: SqliteStore, clock: Clock) -> None:
    limiter = RateLimiter(store, *parse_rate("2/1h"), clock=clock)
    clock.now = NOW + 600
    assert [limiter.check(ADDRESS) for _ in range(3)] == [None, None, 3000]
