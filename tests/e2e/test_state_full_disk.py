"""The embedded store on a full disk: a real filesystem that runs out of space (a 512 KiB
tmpfs mounted for the test, which needs root: `make test` runs as root in CI). Writes fail
as ``StoreUnavailable`` (the caller's 503), reads and earlier revocations still hold, and
writes work again once there is room."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.base import StoreUnavailable
from gateway.state.sqlite import SqliteStore


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("mounting a small filesystem needs root (CI runs `make test` as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_unavailable_and_nothing_is_lost(small_disk: Path) -> None:
    store = SqliteStore(small_disk / "state.db", session_max_age=3600)
    store.revoke(sids=[("kept", time.time() + 600)], now=time.time())
    filler = small_disk / "filler"
    with pytest.raises(OSError), filler.open("wb") as file:
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    with pytest.raises(StoreUnavailable, match="full"):
        for i in range(200):
            store.put(f"key-{i}", os.urandom(4096), 60)
    revoked, _ = store.revocations()
    assert "kept" in revoked.sids
    filler.unlink()
    store.put("after", b"1", 60)
    assert store.get("after") == b"1"
