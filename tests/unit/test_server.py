"""Access lines with secrets redacted (``gateway.server.serve.redact_target``). The ways
the gateway is run are ``tests/e2e/test_server.py``."""

from __future__ import annotations

import resource

import pytest

from gateway.server import serve
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


class Limits:
    """``resource`` as seen by ``raise_open_files_limit``: a soft and a hard limit."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)

    def getrlimit(self, _: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, _: int, limits: tuple[int, int]) -> None:
        assert limits[0] <= limits[1] or limits[1] == resource.RLIM_INFINITY
        self.limits = limits


@pytest.mark.parametrize(
    ("soft", "hard", "raised", "warns"),
    [
        (1024, 1_048_576, 2 * 8192 + 256, False),  # raised to what is needed, not further
        (1024, 10_000, 10_000, True),  # raised as far as allowed, and a warning
        (100_000, 1_048_576, 100_000, False),  # never lowered
        (1024, resource.RLIM_INFINITY, 2 * 8192 + 256, False),
    ],
)
def test_the_open_files_limit_is_raised_for_worker_connections(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, raised: int, warns: bool
) -> None:
    limits = Limits(soft, hard)
    monkeypatch.setattr(serve, "resource", limits)
    problem = serve.raise_open_files_limit(8192)
    assert limits.limits == (raised, hard)
    assert (problem is not None) is warns
    if problem is not None:
        assert "16640" in problem and "worker_connections" in problem
