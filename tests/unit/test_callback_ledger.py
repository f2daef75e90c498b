"""``gateway.login.ledger``: where two callbacks with the same code meet, on the state store.
What the store keeps (no code, state or cookie in clear), exclusivity, and what expires.
That two processes meet there too, and the gateway built on it, is
``tests/e2e/test_duplicate_callback.py``."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.login.ledger import CallbackLedger, Outcome
from gateway.state.sqlite import SqliteStore

CODE, STATE = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "StateValue0123456789abcdefABCDEF"
COOKIE = "wechat_gateway=SealedCookieValue0123456789; Path=/; HttpOnly"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _ledger(tmp_path: Path, clock: Clock | None = None, ttl: float = 60) -> CallbackLedger:
    clock = clock or Clock()
    store = SqliteStore(tmp_path / "state.db", session_max_age=3600, clock=clock)
    return CallbackLedger(store, ttl=ttl, clock=clock, sleep=lambda _: None)


def test_the_ledger_keeps_no_code_state_or_cookie_in_clear(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.claim(CODE)
    assert not ledger.claim(CODE)
    assert ledger.use_state(STATE, ledger.clock() + 600)
    ledger.record(CODE, STATE, Outcome(ok=True, target="/x", set_cookie=COOKIE))
    ledger.store.close()
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))
    for secret in (CODE, STATE, "SealedCookieValue0123456789", "/x"):
        assert secret.encode() not in stored, secret
    # Another state for the same code learns nothing; the right one gets the outcome.
    assert ledger.wait(CODE, "SomeoneElsesState", 0.2) is None
    assert ledger.wait(CODE, STATE, 0.2) == Outcome(ok=True, target="/x", set_cookie=COOKIE)


def test_an_outcome_opens_only_with_its_code(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.record(CODE, STATE, Outcome(ok=True, target="/x", set_cookie=COOKIE))
    key = ledger._digest("outcome", CODE)
    ledger.store.put(ledger._digest("outcome", "another-code"), ledger.store.get(key) or b"", 60)
    assert ledger.wait("another-code", STATE, 0.1) is None


def test_the_ledger_forgets_after_its_ttl(tmp_path: Path) -> None:
    clock = Clock()
    ledger = _ledger(tmp_path, clock, ttl=60)
    assert ledger.claim("old-code")
    ledger.record("old-code", "S", Outcome(ok=False))
    clock.now += 61
    assert ledger.claim("old-code")
    assert ledger.wait("old-code", "S", 0.05) is None


def test_a_used_state_stays_used_until_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    ledger = _ledger(tmp_path, clock, ttl=1)
    assert ledger.use_state(STATE, clock.now + 600)
    assert not ledger.use_state(STATE, clock.now + 600)
    assert ledger.use_state("AnotherState", clock.now + 600)
    clock.now += 5  # past the ttl of claims and outcomes, not the state's own expiry
    assert not ledger.use_state(STATE, clock.now + 600)
    clock.now += 600
    assert ledger.use_state(STATE, clock.now + 600)


def test_one_claim_wins_among_many_at_once(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path / "state.db", session_max_age=3600) for _ in range(8)]
    ledgers = [CallbackLedger(store) for store in stores]
    ledgers[0].claim("warm-up")  # the schema exists before the race
    barrier = threading.Barrier(len(ledgers))
    won: list[bool] = []

    def race(ledger: CallbackLedger) -> None:
        barrier.wait()
        won.append(ledger.claim(CODE))

    threads = [threading.Thread(target=race, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
