"""The Redis settings of ``state``, read and checked without importing redis-py.

Config validation runs in the gunicorn master, before the workers fork and patch the
standard library for gevent; redis-py imports ``ssl`` names directly, so importing it there
would leave them unpatched in every worker (and make gevent warn at each start). The store
itself (``gateway.state.redis``) is imported only where it is used, in a worker.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["check_redis_settings", "parse_hosts", "parse_url"]

_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
_URL_PROBLEM: Final = (
    "state.url: must be redis://, rediss:// or unix:// (no password inside: use state.password)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """A validated ``state.url``."""

    tls: bool
    host: str | None
    port: int
    db: int
    unix_path: str | None

    def describe(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_url(url: str, problems: list[str], *, need_host: bool) -> Endpoint | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        problems.append(_URL_PROBLEM)
        return None
    if parts.scheme not in _SCHEMES or "@" in parts.netloc or parts.fragment:
        problems.append(_URL_PROBLEM)
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    db_text = "0"
    if parts.scheme == "unix":
        unknown = sorted(set(query) - {"db"})
        if parts.netloc or not parts.path:
            problems.append("state.url: unix:// needs a socket path (unix:///run/redis.sock?db=0)")
            return None
        db_text = query.get("db", ["0"])[-1]
    else:
        unknown = sorted(query)
        if need_host and not parts.hostname:
            problems.append("state.url: names no host (redis://HOST:6379/0)")
            return None
        db_text = parts.path.strip("/") or "0"
    if unknown:
        problems.append(f"state.url: unknown parameters {', '.join(unknown)} (only db)")
        return None
    if not db_text.isdigit() or not db_text.isascii():
        problems.append("state.url: the database must be a number (redis://HOST:6379/0)")
        return None
    if parts.scheme == "unix":
        return Endpoint(False, None, 0, int(db_text), unquote(parts.path))
    return Endpoint(parts.scheme == "rediss", parts.hostname, port or 6379, int(db_text), None)


def parse_hosts(sentinel: Mapping[str, object], problems: list[str]) -> list[tuple[str, int]]:
    hosts = sentinel.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        problems.append("state.sentinel.hosts: must be a non-empty list of host:port")
        return []
    found = []
    for index, entry in enumerate(hosts):
        host, _, port = str(entry).rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if (
            not isinstance(entry, str)
            or not host
            or not port.isdigit()
            or not 0 < int(port) < 65536
        ):
            problems.append(f"state.sentinel.hosts[{index}]: must be host:port")
            continue
        found.append((host, int(port)))
    return found


def check_redis_settings(
    url: str,
    sentinel: Mapping[str, object] | bool | None,
    cluster: bool,
    *,
    key_prefix: str = "wechat-gateway:",
) -> list[str]:
    """Every problem with the Redis settings of ``state``, for config validation; none of
    the messages repeats a value that might be a password.

    ``sentinel`` is the section (``master`` and ``hosts``, checked here too), or just
    whether there is one when the caller checks the section itself."""
    problems: list[str] = []
    with_sentinel = sentinel if isinstance(sentinel, bool) else sentinel is not None
    endpoint = parse_url(url, problems, need_host=not with_sentinel)
    if sentinel is not None and not isinstance(sentinel, bool):
        master = sentinel.get("master")
        if not isinstance(master, str) or not master:
            problems.append("state.sentinel.master: must be the name of the master")
        parse_hosts(sentinel, problems)
        if unknown := sorted(set(sentinel) - {"master", "hosts"}):
            problems.append(f"state.sentinel: unknown keys {', '.join(unknown)}")
    if with_sentinel and endpoint is not None and endpoint.unix_path is not None:
        problems.append("state.sentinel: needs a redis:// or rediss:// url, not unix://")
    if cluster:
        if with_sentinel:
            problems.append("state.cluster: cannot be combined with state.sentinel")
        if endpoint is not None and endpoint.unix_path is not None:
            problems.append("state.cluster: needs a redis:// or rediss:// url, not unix://")
        elif endpoint is not None and endpoint.db != 0:
            problems.append("state.cluster: Redis Cluster has only database 0")
    if "{" in key_prefix or "}" in key_prefix:
        problems.append("state.key_prefix: must not contain { or } (the store adds a hash tag)")
    return problems
