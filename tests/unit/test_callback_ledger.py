"""``gateway.login.ledger``: where two callbacks with the same code meet, in one process.
Files and their modes, what they keep in clear (nothing), and what expires. That two
processes meet there too, and the gateway built on it, is
``tests/e2e/test_duplicate_callback.py``."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from gateway.login.ledger import CallbackLedger, Outcome

# --- the ledger itself -------------------------------------------------------------------


def test_the_ledger_keeps_no_code_or_state_in_clear(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    directory.mkdir()
    ledger = CallbackLedger(str(directory))
    code, state = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "StateValue0123456789abcdefABCDEF"
    assert ledger.claim(code)
    assert not ledger.claim(code)
    ledger.record(code, state, Outcome(ok=True, target="/x", set_cookie="sealed"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for entry in directory.iterdir():
        assert code not in entry.name
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        text = entry.read_text(encoding="utf-8")
        assert code not in text
        assert state not in text
    # Another state for the same code learns nothing.
    assert ledger.wait(code, "SomeoneElsesState", 0.2) is None
    assert ledger.wait(code, state, 0.2) == Outcome(ok=True, target="/x", set_cookie="sealed")


def test_the_ledger_forgets_after_its_ttl(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    directory.mkdir()
    ledger = CallbackLedger(str(directory), ttl=60)
    assert ledger.claim("old-code")
    ledger.record("old-code", "S", Outcome(ok=False))
    past = time.time() - 120
    for entry in directory.iterdir():
        os.utime(entry, (past, past))
    assert ledger.claim("new-code")  # sweeps
    assert sorted(p.suffix for p in directory.iterdir()) == [".claim"]


def test_a_used_state_stays_used_until_it_expires(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    directory.mkdir()
    ledger = CallbackLedger(str(directory), ttl=1)
    state = "StateValue0123456789abcdefABCDEF"
    assert ledger.use_state(state, time.time() + 600)
    assert not ledger.use_state(state, time.time() + 600)
    assert ledger.use_state("AnotherState", time.time() + 600)
    old = time.time() - 5  # claims and outcomes older than the ttl are swept...
    for entry in directory.iterdir():
        if entry.suffix != ".state":
            os.utime(entry, (old, old))
    assert ledger.claim("some-code")
    assert not ledger.use_state(state, time.time() + 600)  # ...a state only once it expires
    for entry in directory.iterdir():
        assert state not in entry.name
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert ledger.use_state("ExpiredState", time.time() - 1)
    assert ledger.use_state("ExpiredState", time.time() + 600)  # the expired mark was swept
