"""Access lines with secrets redacted (``gateway.server.serve.redact_target``). The ways
the gateway is run are ``tests/e2e/test_server.py``."""

from __future__ import annotations

import pytest

from gateway.server.serve import redact_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a?x=1", "/a?x=1"),
        ("/a", "/a"),
        (
            "/_gateway/callback?code=S3cr3t&state=Ab12",
            "/_gateway/callback?code=[redacted]&state=[redacted]",
        ),
        ("/p?access_token=t0k&keep=1", "/p?access_token=[redacted]&keep=1"),
        ("/p?client_secret=x&password=y", "/p?client_secret=[redacted]&password=[redacted]"),
    ],
)
def test_redact_target(target: str, expected: str) -> None:
    assert redact_target(target) == expected
