"""Login state: the logins a browser has started, sealed into its login cookie.

A pending login is its OAuth ``state`` (32 characters of ``[A-Za-z0-9]``), the target to
return to, its expiry, whether its callback has been used, and which provider flow it
started. Up to four are kept (logins started in other tabs stay valid), sealed with the
codec under their own purpose, so no other sealed value opens as login state.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from typing import TYPE_CHECKING

from gateway.auth.cookies import request_cookies

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.cookies import CookieSpec
    from gateway.auth.session import SessionCodec

STATE_PURPOSE = b"login-state"
_STATE_ALPHABET = string.ascii_letters + string.digits
_STATE_LENGTH = 32
_MAX_PENDING = 4


def new_state() -> str:
    return "".join(secrets.choice(_STATE_ALPHABET) for _ in range(_STATE_LENGTH))


def valid_state(state: str) -> bool:
    """The contract's shape: at most 128 characters of ``[A-Za-z0-9]``."""
    return 0 < len(state) <= 128 and all(c in _STATE_ALPHABET for c in state)


class PendingLogin:
    """One login started in this browser: state, target, expiry, used, and which flow."""

    __slots__ = ("expires_at", "flow", "state", "target", "used")

    def __init__(self, state: str, target: str, expires_at: int, used: bool, flow: str) -> None:
        self.state = state
        self.target = target
        self.expires_at = expires_at
        self.used = used
        self.flow = flow

    def dump(self) -> list[object]:
        return [self.state, self.target, self.expires_at, int(self.used), self.flow]


class LoginStateCookie:
    """Reads and writes the pending logins of a browser."""

    def __init__(
        self,
        codec: SessionCodec,
        cookie: CookieSpec,
        flows: Collection[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.codec = codec
        self.cookie = cookie
        self.flows = frozenset(flows)
        self.clock = clock

    @property
    def name(self) -> str:
        return self.cookie.name

    def read(self, environ: WSGIEnvironment) -> list[PendingLogin]:
        """The browser's unexpired pending logins, newest first; none for a bad cookie."""
        now = self.clock()
        for value in request_cookies(environ, self.cookie.name):
            payload = self.codec.unseal(value, purpose=STATE_PURPOSE)
            if payload is None:
                continue
            try:
                entries = json.loads(payload)
                return [
                    PendingLogin(str(state), str(target), int(expires), bool(used), str(flow))
                    for state, target, expires, used, flow in entries
                    if int(expires) > now and flow in self.flows
                ]
            except (ValueError, TypeError):
                continue
        return []

    def write(self, pending: list[PendingLogin]) -> tuple[str, str]:
        """The ``Set-Cookie`` header that keeps ``pending`` (the newest four), or clears it."""
        if not pending:
            return self.cookie.clear()
        payload = json.dumps(
            [entry.dump() for entry in pending[:_MAX_PENDING]], separators=(",", ":")
        ).encode()
        ttl = max(max(p.expires_at for p in pending) - int(self.clock()), 1)
        value = self.codec.seal(payload, purpose=STATE_PURPOSE, ttl=ttl)
        return self.cookie.set(value, ttl)

    @staticmethod
    def started(pending: list[PendingLogin], new: PendingLogin) -> list[PendingLogin]:
        """``new`` first, then the other unused logins still pending."""
        return [new, *[p for p in pending if not p.used][: _MAX_PENDING - 1]]
