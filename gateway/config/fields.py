"""Parsers for the config's field types: durations, sizes, listen addresses, URLs.

Each raises ``ValueError`` with a message fit for the validation report, or returns None
for "not usable"; none echoes the value it was given (it may be a secret).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from gateway.config.settings import DEFAULT_STATE_FILE
from gateway.http.origins import parse_origin

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?")
_BIND = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):\d{1,5}$|^unix:/.+$")


def check_bind(value: str) -> str | None:
    """What is wrong with a listen address, or None if it is usable."""
    if not _BIND.match(value):
        return "must be HOST:PORT (e.g. 0.0.0.0:8000) or unix:/path"
    if not value.startswith("unix:") and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
        return "the port must be between 1 and 65535"
    return None


def parse_duration(value: object, *, longest: str = "36500d") -> float:
    """Seconds from ``30``, ``1.5``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"250ms"``;
    at most ``longest``, itself a duration (clocks and cookie dates must be able to add it)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30, 90s, 15m, 12h or 7d")
    seconds = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _text_seconds(value)
    if seconds is None or math.isnan(seconds):
        raise ValueError("must be a duration such as 30, 90s, 15m, 12h or 7d")
    if seconds > (_text_seconds(longest) or 0.0):
        raise ValueError(f"must be at most {longest}")
    return seconds


def _text_seconds(text: str) -> float | None:
    match = _DURATION.match(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else None


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512KiB"``, ``"10MB"``, ``"2GiB"`` (binary units)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 1048576, 512KiB, 10MiB or 2GiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = (match.group(2) or "")[:1].lower()
            return int(match.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("must be a size such as 1048576, 512KiB, 10MiB or 2GiB")


def origin_url(value: str) -> str | None:
    """``value`` normalised to ``scheme://host[:port]`` if it is a bare http(s) origin whose
    host is a DNS name or an IPv6 address."""
    origin = parse_origin(value.strip(), bare=True)
    if origin is None or (":" not in origin.host and not HOSTNAME.fullmatch(origin.host)):
        return None
    return origin.serialize()


def http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return value.strip().rstrip("/")


def sqlite_path(url: str) -> Path:
    """``sqlite:///var/lib/x/state.db`` (and SQLAlchemy's ``sqlite:////var/...``) -> the
    absolute path ``/var/lib/x/state.db``; ``sqlite://state.db`` is relative to the
    working directory."""
    rest = url.removeprefix("sqlite://")
    if rest.startswith("//"):
        rest = rest[1:]
    return Path(rest)


def default_state_url() -> str:
    """The embedded store's file when ``state.url`` is not set: ``/var/lib/wechat-gateway``
    for root (the Docker image's volume), else ``$XDG_STATE_HOME/wechat-gateway`` (by default
    ``~/.local/state/wechat-gateway``)."""
    if os.geteuid() == 0:
        return f"sqlite://{DEFAULT_STATE_FILE}"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"sqlite://{Path(base) / 'wechat-gateway' / 'state.db'}"


def check_sqlite_location(url: str) -> str | None:
    """Why the embedded store could not be written at ``url``, or None."""
    path = sqlite_path(url)
    if not str(path) or path.name in ("", ".", ".."):
        return "must be sqlite:///path/to/state.db"
    if path.exists():
        if path.is_dir():
            return f"{path} is a directory, not a database file"
        return None if os.access(path, os.R_OK | os.W_OK) else f"cannot write {path}"
    parent = path.parent
    while not parent.exists():  # the gateway creates missing directories
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path} (no write access to {parent})"
    return None


_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\S(?:.*\S)?)\s*$")
_RATE_PROBLEM: Final = (
    'must be "N/DURATION": N sign-ins per client address in each DURATION, such as'
    ' "20/60s" or "100/1h" ("0/1s" turns the limit off)'
)


def parse_rate(text: str) -> tuple[int, float]:
    """``(limit, window seconds)`` from ``"N/DURATION"``: ``"20/60s"`` is (20, 60.0),
    ``"100/1h"`` (100, 3600.0), ``"0/1s"`` (0, 1.0), which is no limit. N is a whole
    number, at least 0; DURATION is a duration (``gateway.config.fields.parse_duration``)
    of at least a millisecond. Anything else is a ``ValueError`` whose message says what
    is expected (and does not repeat the value)."""
    if not isinstance(text, str):
        raise ValueError(_RATE_PROBLEM)
    match = _RATE.match(text)
    if match is None:
        if "/" not in text:
            raise ValueError(f"{_RATE_PROBLEM}: the / is missing")
        count = text.split("/", 1)[0].strip()
        if count.startswith("-"):
            raise ValueError(f"{_RATE_PROBLEM}: N must not be negative")
        if not (count.isascii() and count.isdigit()):
            raise ValueError(f"{_RATE_PROBLEM}: N must be a whole number")
        raise ValueError(f"{_RATE_PROBLEM}: the duration is missing")
    count_text, duration = match.groups()
    if not count_text.isascii():
        raise ValueError(f"{_RATE_PROBLEM}: N must be a whole number")
    if duration.startswith("-"):
        raise ValueError(f"{_RATE_PROBLEM}: the duration must not be negative")
    try:
        window = parse_duration(duration)
    except ValueError as exc:
        raise ValueError(f"{_RATE_PROBLEM}: DURATION {exc}") from None
    if round(window * 1000) < 1:
        raise ValueError(f"{_RATE_PROBLEM}: the duration must be at least 1ms")
    return int(count_text), window
