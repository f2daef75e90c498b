"""``access.trusted_proxies``: which peers may speak for the original request at the
forward-auth check. The check itself, behind a real gateway, is
``tests/e2e/test_forward_auth.py``."""

from __future__ import annotations

import pytest

# --- which peers are trusted ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "peer", "trusted"),
    [
        (["127.0.0.1/32"], "127.0.0.1", True),
        (["127.0.0.1/32"], "::ffff:127.0.0.1", True),  # a dual-stack listener's view of it
        (["127.0.0.1/32"], "127.0.0.2", False),
        (["10.0.0.0/8"], "10.20.30.40", True),
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["::1/128"], "::1", True),
        (["::1/128"], "127.0.0.1", False),
        (["fd00::/8"], "fd12::1", True),
        ([], "127.0.0.1", False),
        (["127.0.0.1/32"], "", False),
        (["127.0.0.1/32"], "unix:/run/gateway.sock", False),
        (["127.0.0.1/32"], "127.0.0.1:5555", False),
    ],
)
def test_trusted_proxies(networks: list[str], peer: str, trusted: bool) -> None:
    from gateway.auth.access import TrustedProxies

    assert TrustedProxies(networks).trusts({"REMOTE_ADDR": peer}) is trusted
