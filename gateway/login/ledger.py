"""Recent login callbacks and used login states, in the shared state store: the
duplicate-callback cure, across every worker and replica.

WeChat's in-app browser sometimes opens the callback twice with the same code, a second or
so apart, and shows whichever answer comes last. The code is single-use, so the second
exchange fails (40163) and the user would see an error although the first request signed
them in. The ledger lets the two requests meet: the first to *claim* the code exchanges it
and *records* the outcome (the session cookie and target); a second request with the same
code and the same state waits for that outcome and answers with the same cookie and
redirect, without calling WeChat again. It also remembers which login states were used,
until they expire, so a state comes back with a second code only to be refused: the
browser's own record of a used state (in its login cookie) is not enough against a replayed
old cookie.

Keys are digests of the code or the state. An outcome (the target and the session cookie)
is encrypted (AES-GCM) with a key derived from the code itself, which the store never sees:
only a request that holds the code can read it, and whoever reads the store finds nothing
that signs anyone in. Claims and outcomes live ``ttl`` seconds, a used state until the
state's expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.state.base import StateStore

_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the first callback for a code ended with."""

    ok: bool
    target: str = ""
    set_cookie: str = ""


class CallbackLedger:
    def __init__(
        self,
        store: StateStore,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.sleep = sleep

    @staticmethod
    def _digest(kind: str, text: str) -> str:
        return kind + ":" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def ready(self) -> None:
        """Raise ``StoreUnavailable`` unless a sign-in could complete now."""
        self.store.ping()

    def claim(self, code: str) -> bool:
        """True for the first request with this code: it must exchange it and record."""
        return self.store.add(self._digest("claim", code), b"1", self.ttl)

    def use_state(self, state: str, until: float) -> bool:
        """True the first time a login state is used; it stays used until ``until``, the
        state's own expiry (a replay with another code is then refused)."""
        ttl = max(until - self.clock(), 1.0)
        return self.store.add(self._digest("state", state), b"1", ttl)

    @staticmethod
    def _cipher(code: str) -> AESGCM:
        key = hashlib.sha256(
            b"wechat-gateway outcome key\0" + code.encode("utf-8", "surrogatepass")
        )
        return AESGCM(key.digest())

    def record(self, code: str, state: str, outcome: Outcome) -> None:
        payload = {
            "state": self._digest("state", state),
            "ok": outcome.ok,
            "target": outcome.target,
            "set_cookie": outcome.set_cookie,
        }
        nonce = os.urandom(12)
        sealed = nonce + self._cipher(code).encrypt(nonce, json.dumps(payload).encode(), None)
        self.store.put(self._digest("outcome", code), sealed, self.ttl)

    def wait(self, code: str, state: str, timeout: float) -> Outcome | None:
        """The first request's outcome, if it comes within ``timeout`` and the state matches."""
        key = self._digest("outcome", code)
        deadline = time.monotonic() + timeout
        while True:
            raw = self.store.get(key)
            if raw is not None:
                break
            if time.monotonic() >= deadline:
                return None
            self.sleep(_POLL)
        try:
            payload = json.loads(self._cipher(code).decrypt(raw[:12], raw[12:], None))
        except (InvalidTag, ValueError):
            return None
        if not hmac.compare_digest(str(payload.get("state")), self._digest("state", state)):
            return None
        return Outcome(
            ok=bool(payload.get("ok")),
            target=str(payload.get("target", "")),
            set_cookie=str(payload.get("set_cookie", "")),
        )
