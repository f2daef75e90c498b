"""The ``state`` section: where shared state lives, and what check-config refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, Settings, parse_settings
from gateway.config.fields import check_sqlite_location, default_state_url, sqlite_path

BASE: dict[str, Any] = {
    "public_url": "https://intranet.example.com",
    "wechat": {"app_id": "wx0123456789abcdef", "app_secret": "secret-0123456789"},
    "session": {"secret": "s" * 40},
    "upstreams": [{"prefix": "/", "url": "http://127.0.0.1:8080"}],
}


def _parse(state: dict[str, Any] | None) -> Settings:
    config = dict(BASE)
    if state is not None:
        config["state"] = state
    return parse_settings(yaml.safe_dump(config), environ={})


def _problems(state: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(state)
    return info.value.problems


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/x/state.db", "/var/lib/x/state.db"),
        ("sqlite:////var/lib/x/state.db", "/var/lib/x/state.db"),  # SQLAlchemy's spelling
        ("sqlite://state.db", "state.db"),
    ],
)
def test_everything_after_sqlite_scheme_is_the_path(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)


def test_without_a_state_section_the_embedded_default_is_used() -> None:
    settings = _parse(None)
    assert settings.state.url == default_state_url()
    assert settings.state.max_staleness == 30
    if os.geteuid() == 0:
        assert settings.state.url == "sqlite:///var/lib/wechat-gateway/state.db"


def test_a_writable_location_is_accepted(tmp_path: Path) -> None:
    settings = _parse({"url": f"sqlite://{tmp_path}/new/dir/state.db", "max_staleness": "10s"})
    assert settings.state.url.endswith("/new/dir/state.db")
    assert settings.state.max_staleness == 10


def test_an_unwritable_location_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    found = _problems({"url": f"sqlite://{tmp_path}/a-file/state.db"})
    assert len(found) == 1 and found[0].startswith("state.url: cannot create")
    assert _problems({"url": f"sqlite://{tmp_path}"})[0].startswith("state.url: ")
    assert check_sqlite_location("sqlite:///proc/1/state.db") is not None


def test_redis_settings_do_not_go_with_sqlite(tmp_path: Path) -> None:
    found = _problems({"url": f"sqlite://{tmp_path}/s.db", "cluster": True})
    assert found == ["state.url: sentinel, cluster and password go with a Redis url"]


def test_a_redis_url_is_accepted_and_a_password_inside_it_refused() -> None:
    settings = _parse({"url": "redis://cache.internal:6379/0", "password": "pw-0123"})
    assert settings.state.url == "redis://cache.internal:6379/0"
    assert settings.state.password == "pw-0123"
    assert "pw-0123" not in repr(settings)
    found = _problems({"url": "redis://:hunter2-secret@cache.internal:6379/0"})
    assert len(found) == 1 and found[0].startswith("state.url: ")
    assert "hunter2" not in found[0]
    assert _problems({"url": "ftp://x/"})[0].startswith("state.url: ")


def test_unknown_state_keys_are_refused(tmp_path: Path) -> None:
    found = _problems({"url": f"sqlite://{tmp_path}/s.db", "urll": "x"})
    assert any(p.startswith("state.urll: unknown key") for p in found)
