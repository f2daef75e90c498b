"""Shared state: what every worker of every replica must agree on.

What lives here: the ``StateStore`` protocol and its records (``base``), the embedded
SQLite store for one machine (``sqlite``), the Redis store for replicas (``redis``), and
each worker's in-memory copy of the revocations (``watch``). What does not: what the state
means (the callback ledger is ``gateway.login.ledger``; sessions and their revocation are
read by ``gateway.auth``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.config.fields import sqlite_path
from gateway.state.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.config import StateSettings
    from gateway.state.base import StateStore


def open_store(
    settings: StateSettings, *, session_max_age: float, clock: Callable[[], float] = time.time
) -> StateStore:
    """The store ``state.url`` names. Nothing is connected yet: that happens on first use,
    in the process that uses it (a worker, after the fork)."""
    if settings.url.startswith("sqlite:"):
        return SqliteStore(sqlite_path(settings.url), session_max_age=session_max_age, clock=clock)
    from gateway.state.redis import RedisStore  # noqa: PLC0415 - redis-py only where it is used

    sentinel = settings.sentinel
    return RedisStore(
        settings.url,
        password=settings.password,
        sentinel=(
            {"master": sentinel.master, "hosts": list(sentinel.hosts)}
            if sentinel is not None
            else None
        ),
        cluster=settings.cluster,
        key_prefix=settings.key_prefix,
        session_max_age=session_max_age,
        clock=clock,
    )
