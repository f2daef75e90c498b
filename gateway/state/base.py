"""The shared-state swap point: what every worker of every replica must agree on.

``StateStore`` holds what cannot live in a cookie: used login states and the callback
ledger (``add``/``put``/``get``, short-lived keys), the index of active sessions, and
revocations. It never holds a usable secret in clear: keys are digests, a ledger outcome is
the sealed (encrypted) cookie, a session record is who signed in where, never the cookie.

Revocations are read in bulk and then followed: a worker loads them all once
(``revocations``) and afterwards asks only for what changed (``revocations_since``, with
the cursor the last answer gave), so a request never waits on the store to learn whether
its session was revoked. Three kinds exist: one session (its ``sid``), every session of a
user signed in before a moment, and every session signed in before a moment. Moments are
whole seconds, like a session's sign-in time; a revocation by user or of everyone also
revokes by id every indexed session it ends, so one signed in earlier in the same second
is ended too, while one signed in afterwards is not.

Counters (``hit``) count events per key in fixed windows, for the rate limits: one
atomic increment per event, shared by every worker of every replica, forgotten soon after
their window ends. Like every other key, a counter's key is a digest, never an address.

Every method raises ``StoreUnavailable`` when the store cannot be reached or answers with
something it did not write: the caller turns that into a 503, never a 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable


class StoreUnavailable(Exception):
    """The state store cannot be reached, or answered with something it did not write."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One active session, as ``wechat-gateway sessions list`` shows it."""

    sid: str
    #: The provider's id of the user (WeChat's openid).
    subject: str
    unionid: str | None
    nickname: str
    app_id: str
    provider: str
    #: Unix seconds.
    signed_in_at: int
    expires_at: int
    client: str
    user_agent: str


@dataclass(slots=True)
class Revocations:
    """What has been revoked and is not yet expired: what a worker keeps in memory."""

    #: sid -> unix seconds until which the revocation matters (the session's expiry).
    sids: dict[str, float] = field(default_factory=dict)
    #: user id (openid, unionid, ``wecom:USERID``) -> sessions signed in before this whole
    #: second are out.
    users: dict[str, float] = field(default_factory=dict)
    #: Sessions signed in before this whole second are out (``sessions revoke --all``).
    everyone: float = 0.0

    def prune(self, now: float) -> None:
        """Forget sid revocations whose sessions have expired anyway."""
        expired = [sid for sid, until in self.sids.items() if until <= now]
        for sid in expired:
            del self.sids[sid]

    def merge(self, other: Revocations) -> None:
        self.sids.update(other.sids)
        for user, moment in other.users.items():
            self.users[user] = max(moment, self.users.get(user, 0.0))
        self.everyone = max(self.everyone, other.everyone)

    def revokes(self, sid: str, users: Iterable[str | None], signed_in_at: float) -> bool:
        """Whether a session with this id, of these users, signed in then, is revoked."""
        if signed_in_at < self.everyone or (sid and sid in self.sids):
            return True
        users_out = self.users
        if not users_out:
            return False
        return any(user is not None and signed_in_at < users_out.get(user, -1.0) for user in users)

    def __len__(self) -> int:
        return len(self.sids) + len(self.users) + (1 if self.everyone else 0)

    def active(self, records: Iterable[SessionRecord]) -> list[SessionRecord]:
        """The records none of these revocations ends."""
        return [
            record
            for record in records
            if not self.revokes(record.sid, (record.subject, record.unionid), record.signed_in_at)
        ]


#: One revocation as a store writes it: kind (``sid``, ``user``, ``all``), target, the
#: moment (whole seconds) and until when it matters.
RevocationRow = tuple[str, str, float, float]


def revocation_rows(
    active: list[SessionRecord],
    sids: Iterable[tuple[str, float]],
    users: list[str],
    *,
    everyone: bool,
    now: float,
    keep_for: float,
) -> tuple[list[SessionRecord], list[RevocationRow]]:
    """What a revocation ends among the ``active`` sessions, and the rows that record it:
    by id (each until its session expires), by user and of everyone (until any session
    signed in before ``now`` could still live: ``keep_for``). The sessions a revocation by
    user or of everyone ends are revoked by id too, so one signed in earlier in the same
    second as the revocation is ended as well."""
    by_id = dict(sids)
    if everyone:
        ended = list(active)
    else:
        ended = [
            record
            for record in active
            if record.sid in by_id or record.subject in users or record.unionid in users
        ]
    for record in ended:
        by_id.setdefault(record.sid, record.expires_at)
    moment = float(int(now))
    rows: list[RevocationRow] = [
        ("sid", sid, moment, max(until, now + 1)) for sid, until in by_id.items()
    ]
    rows += [("user", user, moment, now + keep_for) for user in users]
    if everyone:
        rows.append(("all", "", moment, now + keep_for))
    return ended, rows


#: How long a counter outlives its window, so that a replica whose clock is a little behind
#: still counts into the window it is in rather than into a fresh one.
COUNTER_GRACE = 5.0


def fixed_window(window: float, now: float) -> tuple[int, int]:
    """The fixed window of ``window`` seconds containing ``now``, as (start, end) in whole
    milliseconds: the start is ``floor(now / window) * window``, computed on integers so
    that every process finds the same window for the same moment."""
    width = round(window * 1000) if math.isfinite(window) else 0
    if width < 1 or not math.isfinite(now):
        raise ValueError("a counter's window must be at least a millisecond, at a finite time")
    start = math.floor(now * 1000) // width * width
    return start, start + width


def window_left(end_ms: int, window: float, now: float) -> float:
    """Seconds from ``now`` until a window ending at ``end_ms`` ends, within (0, window]."""
    return min(max(end_ms / 1000 - now, 0.001), window)


class StateStore(Protocol):
    """Shared state: short-lived keys, counters, the session index and revocations."""

    #: Where the store is, for logs and ``/_gateway/readyz``: never a password.
    description: str

    # -- short-lived keys (used login states, the callback ledger) --------------------------

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set ``key`` only if it is not set: True for the first caller, for ``ttl`` s."""

    def put(self, key: str, value: bytes, ttl: float) -> None:
        """Set ``key`` for ``ttl`` seconds, whatever it held."""

    def get(self, key: str) -> bytes | None:
        """The value of an unexpired ``key``, or None."""

    # -- counters (rate limits) -------------------------------------------------------------

    def hit(self, key: str, window: float, now: float) -> tuple[int, float]:
        """Count one event for ``key`` in the fixed window of ``window`` seconds that
        contains ``now`` (it starts at ``floor(now / window) * window``, see
        ``fixed_window``); the number of events counted for ``key`` in that window,
        this one included, and the seconds from ``now`` until the window ends.

        Atomic across every worker of every replica: N calls in one window, from anywhere,
        answer 1 to N, each once. A window of another length is another counter. Counters
        are forgotten a few seconds after their window ends (``COUNTER_GRACE``). ``key`` is
        stored as given: the caller passes a digest (never an address or a secret); a
        window under a millisecond is a ``ValueError``."""

    # -- sessions ---------------------------------------------------------------------------

    def index_session(self, record: SessionRecord) -> None:
        """Record a sign-in, until the session expires."""

    def sessions(self, user: str | None = None) -> list[SessionRecord]:
        """Active (unexpired, unrevoked) sessions, of one user (openid or unionid) or all."""

    def revoke(
        self,
        *,
        sids: Iterable[tuple[str, float]] = (),
        users: Iterable[str] = (),
        everyone: bool = False,
        now: float,
    ) -> int:
        """Revoke sessions by id (each with its expiry), every session of ``users``
        signed in up to ``now``, or every session signed in up to ``now``; how many
        indexed sessions that ended."""

    def revocations(self) -> tuple[Revocations, object]:
        """Every unexpired revocation, and a cursor for ``revocations_since``."""

    def revocations_since(self, cursor: object) -> tuple[Revocations, object] | None:
        """What was revoked after ``cursor``, and the next cursor; None when the store
        cannot tell (a reset, a failover): the caller then reloads everything."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers now."""

    def close(self) -> None:
        """Release connections."""
