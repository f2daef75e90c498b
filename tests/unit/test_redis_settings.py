"""The Redis store's settings, without a Redis: what ``check_redis_settings`` refuses, what a
``RedisStore`` calls itself, and that nothing connects before the first call."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.state.base import StoreUnavailable
from gateway.state.redis import RedisStore, check_redis_settings
from tests.helpers.support import free_port

SECRET = "pa55-word-never-shown"
URL_PROBLEM = (
    "state.url: must be redis://, rediss:// or unix:// (no password inside: use state.password)"
)
SENTINEL = {"master": "mymaster", "hosts": ["10.0.0.6:26379", "[::1]:26380"]}


@pytest.mark.parametrize(
    "url",
    [
        "redis://10.0.0.5:6379/0",
        "redis://redis.internal",
        "rediss://redis.internal:6380/2",
        "redis://[::1]:6379/1",
        "unix:///run/redis/redis.sock",
        "unix:///run/redis/redis.sock?db=3",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_redis_settings(url, None, False) == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"redis://:{SECRET}@10.0.0.5:6379/0", URL_PROBLEM),
        (f"redis://default:{SECRET}@10.0.0.5:6379/0", URL_PROBLEM),
        (f"redis://{SECRET}@10.0.0.5:6379/0", URL_PROBLEM),
        (f"rediss://u:{SECRET}@host/0", URL_PROBLEM),
        ("http://10.0.0.5:6379/0", URL_PROBLEM),
        ("10.0.0.5:6379", URL_PROBLEM),
        ("redis://10.0.0.5:99999/0", URL_PROBLEM),
        ("redis://10.0.0.5/0#x", URL_PROBLEM),
        (
            f"redis://10.0.0.5/0?password={SECRET}",
            "state.url: unknown parameters password (only db)",
        ),
        (
            f"unix:///run/redis.sock?db=1&password={SECRET}",
            "state.url: unknown parameters password (only db)",
        ),
        ("redis:///0", "state.url: names no host (redis://HOST:6379/0)"),
        ("redis://10.0.0.5/zero", "state.url: the database must be a number (redis://HOST:6379/0)"),
        ("unix://", "state.url: unix:// needs a socket path (unix:///run/redis.sock?db=0)"),
        (
            "unix://host/x.sock",
            "state.url: unix:// needs a socket path (unix:///run/redis.sock?db=0)",
        ),
    ],
)
def test_bad_urls_never_repeat_the_password(url: str, problem: str) -> None:
    problems = check_redis_settings(url, None, False)
    assert problems == [problem]
    assert SECRET not in problem
    with pytest.raises(ValueError) as raised:
        RedisStore(url, session_max_age=60)
    assert SECRET not in str(raised.value)


def test_sentinel_settings() -> None:
    assert check_redis_settings("redis:///0", SENTINEL, False) == []
    assert check_redis_settings("rediss://ignored-host/1", SENTINEL, False) == []
    assert check_redis_settings("redis:///0", True, False) == []  # the section checked apart
    assert check_redis_settings("redis:///0", {"hosts": ["h:1"], "extra": 1}, False) == [
        "state.sentinel.master: must be the name of the master",
        "state.sentinel: unknown keys extra",
    ]
    assert check_redis_settings("redis:///0", {"master": "m", "hosts": []}, False) == [
        "state.sentinel.hosts: must be a non-empty list of host:port"
    ]
    assert check_redis_settings("redis:///0", {"master": "m", "hosts": ["h", ":1", 7]}, False) == [
        "state.sentinel.hosts[0]: must be host:port",
        "state.sentinel.hosts[1]: must be host:port",
        "state.sentinel.hosts[2]: must be host:port",
    ]
    assert check_redis_settings("unix:///run/r.sock", True, False) == [
        "state.sentinel: needs a redis:// or rediss:// url, not unix://"
    ]


def test_cluster_settings() -> None:
    assert check_redis_settings("redis://10.0.0.5:7000", None, True) == []
    assert check_redis_settings("redis://10.0.0.5:7000/1", None, True) == [
        "state.cluster: Redis Cluster has only database 0"
    ]
    assert check_redis_settings("unix:///run/r.sock", None, True) == [
        "state.cluster: needs a redis:// or rediss:// url, not unix://"
    ]
    assert check_redis_settings("redis:///0", SENTINEL, True) == [
        "state.cluster: cannot be combined with state.sentinel"
    ]


def test_key_prefix_cannot_carry_a_hash_tag() -> None:
    assert check_redis_settings("redis://h/0", None, False, key_prefix="gw{x}:") == [
        "state.key_prefix: must not contain { or } (the store adds a hash tag)"
    ]
    with pytest.raises(ValueError, match="key_prefix"):
        RedisStore("redis://h/0", key_prefix="{a", session_max_age=60)


@pytest.mark.parametrize(
    ("url", "options", "description"),
    [
        ("redis://10.0.0.5/0", {}, "redis://10.0.0.5:6379/0"),
        ("rediss://r.internal:6380/2", {}, "rediss://r.internal:6380/2"),
        ("unix:///run/r.sock?db=4", {}, "unix:///run/r.sock?db=4"),
        (
            "redis:///1",
            {"sentinel": SENTINEL},
            "redis sentinel master mymaster via 10.0.0.6:26379, ::1:26380, db 1",
        ),
        ("rediss://10.0.0.5:7000", {"cluster": True}, "rediss cluster via 10.0.0.5:7000"),
    ],
)
def test_descriptions_name_the_place_never_the_password(
    url: str, options: dict[str, Any], description: str
) -> None:
    store = RedisStore(url, password=SECRET, session_max_age=60, **options)
    assert store.description == description
    store.close()


@pytest.mark.parametrize(
    "options",
    [{}, {"cluster": True}, {"sentinel": "dead"}],
    ids=["server", "cluster", "sentinel"],
)
def test_nothing_connects_before_the_first_call(options: dict[str, Any]) -> None:
    port = free_port()  # nothing listens there
    if options.get("sentinel") == "dead":
        options = {"sentinel": {"master": "mymaster", "hosts": [f"127.0.0.1:{port}"]}}
    store = RedisStore(
        f"redis://127.0.0.1:{port}/0", password=SECRET, session_max_age=60, **options
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        store.ping()
    assert time.monotonic() - started < 2.0
    assert str(raised.value).startswith(store.description)
    assert SECRET not in str(raised.value)
    store.close()
