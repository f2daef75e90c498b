"""Recent login callbacks, shared by the workers of one server: the duplicate-callback cure.

WeChat's in-app browser sometimes opens the callback twice with the same code, a second or
so apart, and shows whichever answer comes last. The code is single-use, so the second
exchange fails (40163) and the user would see an error although the first request signed
them in. The ledger lets the two requests meet: the first to *claim* the code exchanges it
and *records* the outcome (the session cookie and target); a second request with the same
code and the same state waits for that outcome and answers with the same cookie and
redirect, without calling WeChat again. It also remembers which login states were used, until
they expire, so a state comes back with a second code only to be refused: the browser's
own record of a used state (in its login cookie) is not enough against a replayed old cookie.

The requests may land on different workers, so the ledger is a private directory
(mode 0700) that the gunicorn master creates before forking: a claim (or a used state) is
an exclusive creation, an outcome an atomic rename. Files are named by a hash of the code,
hold only a hash of the state and the sealed (encrypted) cookie, and are swept after ``ttl``
seconds; a used state's file is dated with the state's expiry and swept after that. Every
worker sweeps, so a file must never be seen under its name before it is complete: it is made
and dated under a temporary name, then linked into place, which fails if the name is taken.
Replicas behind a load balancer do not share it; the duplicate then gets the ordinary
"code already used" page, and a used state is refused by the replica that saw it used.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the first callback for a code ended with."""

    ok: bool
    target: str = ""
    set_cookie: str = ""


class CallbackLedger:
    def __init__(self, directory: str | None = None, *, ttl: float = 60.0) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="wechat-gateway-ledger-"))
        self.directory.chmod(0o700)
        self.ttl = ttl

    @staticmethod
    def _key(code: str) -> str:
        return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()

    @staticmethod
    def _state_digest(state: str) -> str:
        return hashlib.sha256(state.encode()).hexdigest()

    def claim(self, code: str) -> bool:
        """True for the first request with this code: it must exchange it and record."""
        return self._create(self._key(code) + ".claim")

    def use_state(self, state: str, until: float) -> bool:
        """True the first time a login state is used; it stays used until ``until``, the
        state's own expiry (a replay with another code is then refused)."""
        return self._create(self._state_digest(state) + ".state", dated=until)

    def _create(self, name: str, *, dated: float | None = None) -> bool:
        """Create the file ``name`` if no worker has yet (an exclusive creation), with its
        date from the start: a sweep must never see a used state undated, as if expired."""
        self._sweep()
        temporary = self.directory / f"{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            if dated is not None:
                os.utime(fd, (dated, dated))
        finally:
            os.close(fd)
        try:
            os.link(temporary, self.directory / name)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return True

    def record(self, code: str, state: str, outcome: Outcome) -> None:
        payload = {
            "state": self._state_digest(state),
            "ok": outcome.ok,
            "target": outcome.target,
            "set_cookie": outcome.set_cookie,
        }
        final = self.directory / (self._key(code) + ".json")
        temporary = final.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(final)

    def wait(self, code: str, state: str, timeout: float) -> Outcome | None:
        """The first request's outcome, if it comes within ``timeout`` and the state matches."""
        path = self.directory / (self._key(code) + ".json")
        deadline = time.monotonic() + timeout
        while True:
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(_POLL)
                continue
            if not hmac.compare_digest(str(payload.get("state")), self._state_digest(state)):
                return None
            return Outcome(
                ok=bool(payload.get("ok")),
                target=str(payload.get("target", "")),
                set_cookie=str(payload.get("set_cookie", "")),
            )

    def _sweep(self) -> None:
        now = time.time()
        cutoff = now - self.ttl
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    if entry.name.endswith(".state"):
                        # A used state's file is dated with the state's expiry.
                        expired = stat.st_mtime < now
                    elif entry.name.endswith(".tmp"):
                        # Being made, and perhaps dated already (any date): only its last
                        # change, which dating sets too, tells a worker that died making it.
                        expired = stat.st_ctime < cutoff
                    else:
                        expired = stat.st_mtime < cutoff
                    if expired:
                        os.unlink(entry.path)
