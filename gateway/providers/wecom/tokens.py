"""WeCom's access token, one per app, shared by every worker of every replica.

WeCom wants its ``gettoken`` called once per token lifetime (two hours), not per request
(45009), and a wrong secret repeated gets the caller's IP banned for an hour. So the token
of each app (corp id, agent id) lives in the state store, sealed with the session codec
under its own purpose (the store never holds it in clear), and each worker keeps a copy in
memory: a warm worker asks the store nothing.

One caller at a time fetches: within a worker a thread lock, across workers and replicas
an add-if-absent key in the store with a short TTL (the caller's remaining time budget plus
a second), so a holder that dies frees it by itself. Whoever does not hold it waits, polling
the store with short sleeps within its own deadline, for the token the holder writes; or,
when the token it has is only due for refresh (less than five minutes, or a tenth of its
lifetime, left), goes on with that one. Fifty sign-ins arriving on an empty cache make one
``gettoken`` call.

A failing ``gettoken`` is remembered, in memory and in the store, so that sign-ins fail
fast instead of queueing up calls: a configuration error (wrong secret or corp id, disabled
app) for five minutes, reported as one ERROR line per worker, never retried into an IP ban;
WeCom's rate limit for a minute. A remembered failure belongs to the secret it happened
with: a corrected secret is tried at once. Other failures (timeouts, garbage) are not
remembered: the next caller tries again.

An invalid token (40014/42001) is dropped here by the client (``invalidate``), only if it
is still the one cached, and the next ``get`` fetches a new one, again by one caller.

When the store is unavailable a worker goes on with its own copy while that is valid;
without one, ``StoreUnavailable`` is raised for the caller to turn into a 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gateway.providers.wecom.client import (
    RateLimited,
    WeComAPIError,
    WeComError,
    WeComTimeout,
    api_error,
)
from gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.auth.session import SessionCodec
    from gateway.providers.wecom.client import WeComClient
    from gateway.state.base import StateStore

__all__ = ["CONFIG_FAILURE_TTL", "RATE_LIMIT_TTL", "AccessTokens"]

logger = logging.getLogger("gateway.wecom")

#: How long a configuration error of ``gettoken`` is remembered, and reported once per
#: worker: five minutes.
CONFIG_FAILURE_TTL: Final = 300.0
#: How long ``gettoken`` is left alone after WeCom's rate limit: its per-minute block.
RATE_LIMIT_TTL: Final = 60.0

_TOKEN_PURPOSE: Final = b"wecom-access-token"
_FAILURE_PURPOSE: Final = b"wecom-token-failure"
# Refreshed when less than this is left: five minutes, or a tenth of a short lifetime.
_AHEAD: Final = 300.0
_AHEAD_SHARE: Final = 0.1
# The store lock outlives its holder's time budget by this much.
_LOCK_MARGIN: Final = 1.0
# The store has no delete: a lock is released by putting it back with this TTL.
_RELEASED_TTL: Final = 0.001
# What an invalidated token is overwritten with in the store (it does not unseal).
_TOMBSTONE: Final = b"dropped"
_TOMBSTONE_TTL: Final = 60.0
_POLL_FIRST: Final = 0.02
_POLL_MAX: Final = 0.2
# Tokens dropped lately are never adopted again from the store.
_DROPPED_KEPT: Final = 8


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    #: Unix seconds.
    expires_at: float
    refresh_at: float


@dataclass(frozen=True, slots=True)
class _Failure:
    """A remembered ``gettoken`` failure: enough to raise it again."""

    errcode: int
    errmsg: str
    hint: str | None
    from_ip: str | None
    credential: str
    #: Unix seconds.
    until: float
    ttl: float


@dataclass(frozen=True, slots=True)
class _Lock:
    acquired: float
    ttl: float


class _App:
    """What a worker knows about one app's token."""

    __slots__ = (
        "dropped",
        "failure",
        "failure_key",
        "key",
        "lock",
        "lock_key",
        "logged_until",
        "token",
    )

    def __init__(self, name: str) -> None:
        self.key = f"wecom-token:{name}"
        self.lock_key = f"wecom-token-lock:{name}"
        self.failure_key = f"wecom-token-failure:{name}"
        self.token: _Token | None = None
        self.failure: _Failure | None = None
        self.logged_until = 0.0
        self.dropped: deque[str] = deque(maxlen=_DROPPED_KEPT)
        self.lock = threading.Lock()


class AccessTokens:
    """The access tokens of any number of WeCom apps, for one worker; build one per worker
    (after gevent has patched threading) and give it to every ``WeComClient``.

    ``clock`` is wall time (unix seconds): expiries are compared across machines. Deadlines
    are read on each client's own monotonic clock.
    """

    def __init__(
        self,
        state: StateStore,
        codec: SessionCodec,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        config_failure_ttl: float = CONFIG_FAILURE_TTL,
        rate_limit_ttl: float = RATE_LIMIT_TTL,
    ) -> None:
        self._state = state
        self._codec = codec
        self._clock = clock
        self._sleep = sleep
        self._config_failure_ttl = config_failure_ttl
        self._rate_limit_ttl = rate_limit_ttl
        # Values sealed with another session secret do not open: keep them apart.
        self._prefix = codec.key_id.hex()
        self._apps: dict[tuple[str, int], _App] = {}
        self._apps_lock = threading.Lock()

    def get(self, client: WeComClient, *, deadline: float) -> str:
        """The app's access token, fetched by one caller at a time when needed.

        Raises the ``WeComError`` of a failed (or remembered) ``gettoken``, ``WeComTimeout``
        when no token could be had by ``deadline``, and ``StoreUnavailable`` when the store
        is away and this worker has no valid token of its own.
        """
        app = self._app(client)
        token = app.token
        if token is not None:
            now = self._clock()
            if now < token.refresh_at:
                return token.value
            if now < token.expires_at:
                return self._refresh_ahead(app, client, token, deadline)
        return self._obtain(app, client, deadline)

    def invalidate(self, client: WeComClient, token: str) -> None:
        """WeCom refused ``token``: forget it, here and in the store, if it is still the
        cached one (another caller may have replaced it already)."""
        app = self._app(client)
        app.dropped.append(_digest(token))
        current = app.token
        if current is not None and current.value == token:
            app.token = None
        try:
            stored = self._load(app, include_dropped=True)
            if stored is not None and stored.value == token:
                self._state.put(app.key, _TOMBSTONE, _TOMBSTONE_TTL)
        except StoreUnavailable:
            # The other workers learn it from WeCom's own refusal, as this one did.
            pass

    # -- the two ways to a token --

    def _refresh_ahead(self, app: _App, client: WeComClient, token: _Token, deadline: float) -> str:
        """The token is due for refresh but still valid: one caller refreshes, everyone
        else (and that caller, should the refresh fail) goes on with it."""
        if not app.lock.acquire(blocking=False):
            return token.value
        try:
            now = self._clock()
            current = app.token
            if current is not None and current is not token and now < current.refresh_at:
                return current.value
            if self._remembered(app, client, now) is not None:
                return token.value
            # Half of the time left, so that the call that needed the token still has some.
            start = client.monotonic()
            fetch_by = start + (deadline - start) / 2
            try:
                stored = self._load(app)
                if stored is not None and now < stored.refresh_at:
                    app.token = stored
                    return stored.value
                if self._stored_failure(app, client) is not None:
                    return token.value
                lock = self._try_lock(app, client, fetch_by)
                if lock is not None:
                    # Refreshed by the holder before, after this caller looked.
                    stored = self._load(app)
                    if stored is not None and now < stored.refresh_at:
                        self._unlock(app, client, lock)
                        app.token = stored
                        return stored.value
            except StoreUnavailable:
                return token.value
            if lock is None:
                return token.value
            try:
                return self._fetch(app, client, fetch_by, lock)
            except WeComError:
                return token.value
        finally:
            app.lock.release()

    def _obtain(self, app: _App, client: WeComClient, deadline: float) -> str:
        """No valid token here: take the store's, or fetch one, or wait for the caller who
        is fetching it."""
        self._raise_remembered(app, client)
        if not app.lock.acquire(timeout=max(0.0, deadline - client.monotonic())):
            raise _timed_out()
        try:
            token = app.token
            if token is not None and self._clock() < token.expires_at:
                return token.value  # another thread of this worker got it meanwhile
            self._raise_remembered(app, client)
            delay = _POLL_FIRST
            while True:
                stored = self._load(app)
                if stored is not None and self._clock() < stored.expires_at:
                    app.token = stored
                    return stored.value
                failure = self._stored_failure(app, client)
                if failure is not None:
                    raise self._error(client, failure)
                lock = self._try_lock(app, client, deadline)
                if lock is not None:
                    # The holder before may have stored a token after this loop looked.
                    stored = self._load(app)
                    if stored is not None and self._clock() < stored.expires_at:
                        self._unlock(app, client, lock)
                        app.token = stored
                        return stored.value
                    return self._fetch(app, client, deadline, lock)
                left = deadline - client.monotonic()
                if left <= 0:
                    raise _timed_out()
                self._sleep(min(delay, left))
                delay = min(delay * 2, _POLL_MAX)
        finally:
            app.lock.release()

    # -- fetching --

    def _fetch(self, app: _App, client: WeComClient, deadline: float, lock: _Lock) -> str:
        """``gettoken``, holding the store lock; the token is shared, a failure recorded."""
        started = self._clock()
        try:
            issued = client.fetch_token(deadline=deadline)
        except WeComError as exc:
            self._unlock(app, client, lock)
            self._failed(app, client, exc)
            raise
        lifetime = float(issued.expires_in)
        token = _Token(
            issued.value,
            started + lifetime,
            started + lifetime - min(_AHEAD, lifetime * _AHEAD_SHARE),
        )
        app.token = token
        app.failure = None
        payload = {
            "token": token.value,
            "expires_at": token.expires_at,
            "refresh_at": token.refresh_at,
        }
        try:
            self._state.put(app.key, self._seal(payload, _TOKEN_PURPOSE, lifetime), lifetime)
        except StoreUnavailable as exc:
            logger.warning(
                "the WeCom access token is kept by this worker only: %s is unavailable (%s)",
                self._state.description,
                exc,
            )
        self._unlock(app, client, lock)
        return token.value

    def _try_lock(self, app: _App, client: WeComClient, deadline: float) -> _Lock | None:
        now = client.monotonic()
        ttl = max(deadline - now, 0.0) + _LOCK_MARGIN
        if not self._state.add(app.lock_key, secrets.token_hex(8).encode(), ttl):
            return None
        return _Lock(now, ttl)

    def _unlock(self, app: _App, client: WeComClient, lock: _Lock) -> None:
        # Only while the lock is surely still ours: once it has expired another caller
        # may hold it, and it is not this one's to end.
        if client.monotonic() - lock.acquired >= lock.ttl - _LOCK_MARGIN / 2:
            return
        with contextlib.suppress(StoreUnavailable):  # else it expires within a second or so
            self._state.put(app.lock_key, b"", _RELEASED_TTL)

    # -- failures --

    def _failed(self, app: _App, client: WeComClient, exc: WeComError) -> None:
        """Report a failed ``gettoken``; remember it when retrying cannot help soon."""
        if isinstance(exc, WeComAPIError) and exc.is_config_error:
            ttl = self._config_failure_ttl
        elif isinstance(exc, RateLimited):
            ttl = self._rate_limit_ttl
        else:
            if isinstance(exc, WeComAPIError):
                logger.warning("%s (errmsg %r)", exc, exc.errmsg)
            else:
                logger.warning("%s", exc)
            return
        failure = _Failure(
            exc.errcode,
            exc.errmsg,
            exc.hint,
            exc.from_ip,
            client.credential_id,
            self._clock() + ttl,
            ttl,
        )
        app.failure = failure
        payload = {
            "errcode": failure.errcode,
            "errmsg": failure.errmsg,
            "hint": failure.hint,
            "from_ip": failure.from_ip,
            "credential": failure.credential,
            "until": failure.until,
            "ttl": ttl,
        }
        with contextlib.suppress(StoreUnavailable):  # else remembered by this worker only
            self._state.put(app.failure_key, self._seal(payload, _FAILURE_PURPOSE, ttl), ttl)
        self._report(app, exc, failure)

    def _report(self, app: _App, exc: WeComAPIError, failure: _Failure) -> None:
        """One log line per worker per remembered failure."""
        now = self._clock()
        if now < app.logged_until:
            return
        app.logged_until = now + failure.ttl
        level = logging.ERROR if exc.is_config_error else logging.WARNING
        logger.log(
            level,
            "%s (errmsg %r); gettoken is not called again for %.0f s",
            exc,
            exc.errmsg,
            max(failure.until - now, 0.0),
        )

    def _remembered(self, app: _App, client: WeComClient, now: float) -> _Failure | None:
        failure = app.failure
        if failure is None or failure.until <= now or failure.credential != client.credential_id:
            return None
        return failure

    def _raise_remembered(self, app: _App, client: WeComClient) -> None:
        failure = self._remembered(app, client, self._clock())
        if failure is not None:
            raise self._error(client, failure)

    def _stored_failure(self, app: _App, client: WeComClient) -> _Failure | None:
        """A failure another worker or replica remembered for this app and secret."""
        data = self._open(self._state.get(app.failure_key), _FAILURE_PURPOSE)
        try:
            failure = _Failure(
                int(data["errcode"]),
                str(data["errmsg"]),
                None if data["hint"] is None else str(data["hint"]),
                None if data["from_ip"] is None else str(data["from_ip"]),
                str(data["credential"]),
                float(data["until"]),
                float(data["ttl"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if failure.credential != client.credential_id or failure.until <= self._clock():
            return None
        app.failure = failure
        self._report(app, self._error(client, failure), failure)
        return failure

    def _error(self, client: WeComClient, failure: _Failure) -> WeComAPIError:
        """The remembered failure, raised again without asking WeCom."""
        errmsg = failure.errmsg
        if failure.hint:
            errmsg += f", hint: [{failure.hint}]"
        if failure.from_ip:
            errmsg += f", from ip: {failure.from_ip}"
        left = max(failure.until - self._clock(), 0.0)
        return api_error(
            "gettoken",
            failure.errcode,
            errmsg,
            config_key=client.config_key,
            note=f"not asked again for {left:.0f} s",
        )

    # -- the store --

    def _app(self, client: WeComClient) -> _App:
        key = (client.corp_id, client.agent_id)
        app = self._apps.get(key)
        if app is None:
            with self._apps_lock:
                app = self._apps.get(key)
                if app is None:
                    name = hashlib.sha256(
                        f"{client.corp_id}\0{client.agent_id}".encode()
                    ).hexdigest()[:32]
                    app = self._apps[key] = _App(f"{self._prefix}:{name}")
        return app

    def _load(self, app: _App, *, include_dropped: bool = False) -> _Token | None:
        data = self._open(self._state.get(app.key), _TOKEN_PURPOSE)
        try:
            token = _Token(str(data["token"]), float(data["expires_at"]), float(data["refresh_at"]))
        except (KeyError, TypeError, ValueError):
            return None
        if not include_dropped and _digest(token.value) in app.dropped:
            return None
        return token

    def _seal(self, payload: dict[str, Any], purpose: bytes, ttl: float) -> bytes:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return self._codec.seal(raw, purpose=purpose, ttl=max(1, int(ttl))).encode("ascii")

    def _open(self, value: bytes | None, purpose: bytes) -> dict[str, Any]:
        """A sealed value's JSON object; empty for anything else (absent, a tombstone,
        sealed with another secret)."""
        if value is None:
            return {}
        opened = self._codec.unseal(value.decode("ascii", "replace"), purpose=purpose)
        if opened is None:
            return {}
        try:
            data = json.loads(opened)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _timed_out() -> WeComTimeout:
    return WeComTimeout(
        "gettoken",
        "no access token within the time budget while another caller was fetching it",
        "WeCom's gettoken is slow or unreachable; check that this host can reach it",
    )
