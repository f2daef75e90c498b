"""Whether this process runs on gevent, and its ``Timeout`` when it does.

The default worker patches the standard library after fork, so this is asked at run time,
in the worker, never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def gevent_timeout() -> Any | None:
    """gevent's ``Timeout`` class when this process runs on gevent, else None.

    Under gevent a socket timeout arms a new timer for every wait, and cannot bound an
    exchange whose bytes trickle; one ``Timeout`` around the exchange does both.
    """
    try:
        from gevent import Timeout, monkey  # noqa: PLC0415 - only present with gevent
    except ImportError:
        return None
    return Timeout if monkey.is_module_patched("socket") else None


def off_hub(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in gevent's thread pool when this process runs on gevent, else
    here: a call that blocks in C (SQLite waiting for a lock, a disk write) must not freeze
    every greenlet of the worker."""
    try:
        from gevent import get_hub, monkey  # noqa: PLC0415 - only present with gevent
    except ImportError:
        return function(*args)
    if not monkey.is_module_patched("socket"):
        return function(*args)

    def call() -> tuple[bool, Any]:
        # An exception raised in the pool's thread would be printed there with a traceback;
        # it is carried back and raised here instead, where the caller handles it.
        try:
            return True, function(*args)
        except Exception as exc:
            return False, exc

    ok, value = get_hub().threadpool.apply(call)
    if not ok:
        raise value
    result: T = value
    return result
