"""What the CLI tests of both lanes share: config files to check, and ``cli.main`` run
in-process (``main``) for its exit code and output. ``broken_config`` has four problems at
once (``BROKEN_PROBLEMS``) and every secret present, so a leak would show."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli
from tests.helpers.support import base_config, free_port

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def valid_config(port: int | None = None) -> dict[str, Any]:
    return base_config(port or free_port(), "http://127.0.0.1:9")


def broken_config() -> dict[str, Any]:
    """Four problems at once, and every secret present so a leak would show."""
    config = valid_config()
    del config["wechat"]["app_id"]
    config["upstreams"] = [{"prefix": "/", "url": "ftp://files.example.com"}]
    config["server"]["workers"] = "two"
    config["upstream"] = []
    return config


BROKEN_PROBLEMS = (
    "wechat.app_id: required",
    "upstreams[0].url: must be an http or https URL",
    "server.workers: ",
    "upstream: unknown key (did you mean 'upstreams'?)",
)


def assert_problems_on_their_own_lines(output: str, problems: tuple[str, ...]) -> None:
    lines = [line.strip() for line in output.splitlines()]
    for problem in problems:
        assert [line for line in lines if line.startswith(problem)], (problem, output)


def main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
