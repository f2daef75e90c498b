"""Rate limits on sign-in starts and callbacks, per client address, across replicas.

``login.rate_limit: "N/DURATION"`` (``parse_rate``) allows N events per client address in
each fixed window of DURATION (``"20/60s"``: twenty a minute; ``"0/1s"``: no limit). The
windows are fixed, not sliding: they start at multiples of DURATION since the epoch, the
same on every worker and replica, and a client can therefore get up to 2N through in a
burst that straddles a window's end, never more.

Counting is the state store's (``StateStore.hit``): one atomic increment per event, so
every worker of every replica counts into the same counter. Its key is
``ratelimit:SCOPE:DIGEST``: the digest (SHA-256, truncated to 128 bits) of the client's
address, so the store never holds an address. Addresses are grouped as one client would
hold them: an IPv4-mapped IPv6 address counts as its IPv4 address, and an IPv6 address as
its /64 network (one subscriber's prefix: a client that may pick any of 2**64 addresses
must not get a fresh limit with each). Anything that is not an IP address (a unix socket's
empty peer) is counted as given.

Beyond the limit, ``check`` answers the seconds until the window ends (``Retry-After``, a
whole number, at least 1); the caller answers 429 with it.

When the store cannot be reached, the limiter fails **open**: the event is allowed, a
warning is logged once per outage (per worker), and the store is not asked again for
``BACKOFF`` seconds, so an outage costs no request a second timeout. This is deliberate:
the limiter only protects the sign-in, and a sign-in that needs the store (a callback
always does) fails closed on its own with a 503; refusing with a 429, or a 503 from the
limiter, would turn a store outage into a lockout of everyone, including from the pages
that do not need the store.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from typing import TYPE_CHECKING, Final

from gateway.config.fields import parse_rate
from gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.state.base import StateStore

__all__ = ["BACKOFF", "RateLimiter", "client_key", "parse_rate"]

log = logging.getLogger("gateway.login")

#: After the store failed, how long the limiter allows everything without asking it.
BACKOFF: Final = 5.0
_DIGEST_CONTEXT: Final = b"wechat-gateway rate limit\x00"


def client_key(client_address: str, scope: str = "login") -> str:
    """The store key counting ``client_address`` in ``scope``: a digest, never the
    address; the same for every address of one client (see the module's docstring)."""
    text = client_address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        client = client_address
    else:
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is not None:
                client = str(mapped)
            else:
                client = str(ipaddress.IPv6Network((address.packed, 64), strict=False))
        else:
            client = str(address)
    digest = hashlib.sha256(_DIGEST_CONTEXT + client.encode("utf-8", "surrogatepass"))
    return f"ratelimit:{scope}:{digest.hexdigest()[:32]}"


class RateLimiter:
    """At most ``limit`` events per client address in each fixed window of ``window``
    seconds, counted in ``store``; ``limit`` 0 is no limit (the store is never asked)."""

    def __init__(
        self,
        store: StateStore,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("the limit must be a whole number, at least 0")
        if limit and not (math.isfinite(window) and round(window * 1000) >= 1):
            raise ValueError("the window must be at least a millisecond")
        self.store = store
        self.limit = limit
        self.window = float(window)
        self.clock = clock
        #: Until when (``clock`` time) the store is left alone after a failure; None
        #: while it answers.
        self._down_until: float | None = None

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def check(self, client_address: str, scope: str = "login") -> int | None:
        """Count one event of ``client_address`` in ``scope``: None when it is within the
        limit (or the limit is off, or the store cannot be reached: fail open), else the
        whole seconds, at least 1, until the window ends: the ``Retry-After``."""
        if not self.limit:
            return None
        now = self.clock()
        down_until = self._down_until
        if down_until is not None and now < down_until:
            return None
        try:
            count, left = self.store.hit(client_key(client_address, scope), self.window, now)
        except StoreUnavailable as exc:
            if down_until is None:
                log.warning(
                    "rate limit not enforced: the state store cannot be reached (%s);"
                    " sign-ins are allowed without a limit until it answers",
                    exc,
                )
            self._down_until = now + BACKOFF
            return None
        if down_until is not None:
            log.warning("rate limit enforced again: the state store answers")
            self._down_until = None
        if count <= self.limit:
            return None
        return max(1, math.ceil(left))
