"""Whether this process runs on gevent, and its ``Timeout`` when it does.

The default worker patches the standard library after fork, so this is asked at run time,
in the worker, never at import.
"""

from __future__ import annotations

from typing import Any


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
