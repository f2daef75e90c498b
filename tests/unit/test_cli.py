"""Tests for :mod:`gateway.cli` in-process: ``gateway.cli.main`` with exact exit codes
and output. The real program, ``python -m gateway`` in a subprocess (``serve`` starting
gunicorn included), is ``tests/e2e/test_cli.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway import cli
from gateway.config import parse_settings
from tests.helpers.cli import (
    BROKEN_PROBLEMS,
    URL_SAFE,
    assert_problems_on_their_own_lines,
    broken_config,
    main,
    valid_config,
    write_config,
)

# --- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["check-config", "-h"]])
def test_help_in_process_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    assert "usage: wechat-gateway" in capsys.readouterr().out


# --- gen-secret ---------------------------------------------------------------------------


def test_gen_secret_in_process_is_usable_as_session_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = set()
    for _ in range(5):
        code, out, err = main(["gen-secret"], capsys)
        assert code == 0
        assert err == ""
        secret = out.strip()
        assert URL_SAFE.fullmatch(secret)
        secrets.add(secret)
        config = valid_config()
        config["session"]["secret"] = secret
        assert parse_settings(yaml.safe_dump(config), environ={}).session.secret == secret
    assert len(secrets) == 5


# --- serve --------------------------------------------------------------------------------


def test_serve_in_process_with_an_invalid_config_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "gw.yaml", broken_config())
    code, out, err = main(["serve", "-c", str(path)], capsys)
    assert code == 2
    assert_problems_on_their_own_lines(out + err, BROKEN_PROBLEMS)
