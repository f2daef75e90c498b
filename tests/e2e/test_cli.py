"""Tests for :mod:`gateway.cli`: the ``wechat-gateway`` command an operator types.

Each behaviour is checked twice where it matters: through ``gateway.cli.main`` in-process
(fast, exact exit codes) and as the real program, ``python -m gateway`` in a subprocess, the
way an operator or an orchestrator runs it. ``serve`` is only ever run as a subprocess: it
starts gunicorn for real. What needs no subprocess at all is ``tests/unit/test_cli.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import (
    BROKEN_PROBLEMS,
    URL_SAFE,
    assert_problems_on_their_own_lines,
    broken_config,
    main,
    valid_config,
    write_config,
)
from tests.helpers.support import APP_SECRET, SESSION_SECRET, free_port

ENV_VAR = "WECHAT_GATEWAY_CONFIG"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without WECHAT_GATEWAY_CONFIG, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != ENV_VAR}
    env.update(extra)
    return env


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        timeout=timeout,
        check=False,
    )


def port_is_listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


# --- help ---------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in ("serve", "check-config", "gen-secret", "demo", ENV_VAR, "gateway.yaml", "usage:"):
        assert word in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("serve", ("-c", "--config", "FILE", "--bind", "HOST:PORT", "--workers", ENV_VAR)),
        ("check-config", ("-c", "--config", "FILE", ENV_VAR, "gateway.yaml")),
        ("gen-secret", ("session.secret",)),
        ("demo", ("--port", "simulator")),
    ],
)
def test_each_command_has_help(command: str, words: tuple[str, ...]) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"usage: wechat-gateway {command}" in result.stdout
    for word in words:
        assert word in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: wechat-gateway" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_command_prints_the_whole_help() -> None:
    """Not argparse's one line: what each command does and the examples, on stderr."""
    result = run()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == run("--help").stdout
    result = run("sessions")
    assert result.returncode == 2
    assert result.stderr == run("sessions", "--help").stdout


def test_check_config_without_a_file_points_at_the_example(tmp_path: Path) -> None:
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "gateway.yaml: config file not found (no -c FILE, no $WECHAT_GATEWAY_CONFIG); start "
        "from the example, at the top of the source tree: cp gateway.yaml.example gateway.yaml"
    ]
    # The example it names is there, and is a start that check-config reads.
    example = Path(__file__).parents[2] / "gateway.yaml.example"
    shutil.copyfile(example, tmp_path / "gateway.yaml")
    result = run("check-config", cwd=tmp_path)
    assert "not found" not in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("start")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_serve_rejects_a_bad_worker_count(workers: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gateway.yaml", valid_config())
    result = run("serve", "-c", str(config), "--workers", workers)
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    from gateway import __version__

    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_console_script_is_installed() -> None:
    # `pip install .` must give the `wechat-gateway` command next to this interpreter.
    script = shutil.which("wechat-gateway", path=str(Path(sys.executable).parent))
    assert script is not None, "wechat-gateway is not installed; run `pip install -e .`"
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert "check-config" in result.stdout


# --- gen-secret ---------------------------------------------------------------------------


def test_gen_secret_prints_a_fresh_url_safe_value() -> None:
    first, second = run("gen-secret"), run("gen-secret")
    values = []
    for result in (first, second):
        assert result.returncode == 0
        assert result.stdout.endswith("\n")
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        assert len(lines[0]) >= 32
        assert URL_SAFE.fullmatch(lines[0])
        values.append(lines[0])
    assert values[0] != values[1]


# --- check-config -------------------------------------------------------------------------


def test_check_config_accepts_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "gw.yaml", valid_config())
    result = run("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    code, _out, err = main(["check-config", "--config", str(config)], capsys)
    assert code == 0
    assert err == ""


def test_check_config_reports_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "gw.yaml", broken_config())

    result = run("check-config", "-c", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert_problems_on_their_own_lines(output, BROKEN_PROBLEMS)
    assert "Traceback" not in output
    assert APP_SECRET not in output
    assert SESSION_SECRET not in output

    code, out, err = main(["check-config", "-c", str(config)], capsys)
    assert code == 2
    assert_problems_on_their_own_lines(out + err, BROKEN_PROBLEMS)


def test_check_config_names_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.yaml"
    result = run("check-config", "-c", str(missing))
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert str(missing) in output
    assert "not found" in output
    assert "Traceback" not in output

    code, out, err = main(["check-config", "-c", str(missing)], capsys)
    assert code == 2
    assert "not found" in out + err


def test_check_config_names_invalid_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("public_url: https://x.example\nwechat: {app_id: [\n", encoding="utf-8")
    result = run("check-config", "-c", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "invalid YAML" in output
    assert "line" in output
    assert "Traceback" not in output

    code, out, err = main(["check-config", "-c", str(config)], capsys)
    assert code == 2
    assert "invalid YAML" in out + err


def test_check_config_never_prints_a_traceback_for_odd_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(valid_config()).replace(
        f"app_secret: {APP_SECRET}", f"app_secret: !!int {APP_SECRET}"
    )
    config = tmp_path / "gw.yaml"
    config.write_text(text, encoding="utf-8")
    result = run("check-config", "-c", str(config))
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "Traceback" not in output
    assert APP_SECRET not in output


def test_check_config_uses_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_config(tmp_path / "good.yaml", valid_config())
    bad = write_config(tmp_path / "bad.yaml", broken_config())
    (tmp_path / "gateway.yaml").write_text("not: [valid\n", encoding="utf-8")

    assert run("check-config", cwd=tmp_path, env=clean_env(**{ENV_VAR: str(good)})).returncode == 0
    result = run("check-config", cwd=tmp_path, env=clean_env(**{ENV_VAR: str(bad)}))
    assert result.returncode == 2
    assert_problems_on_their_own_lines(result.stdout + result.stderr, BROKEN_PROBLEMS)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(good))
    assert main(["check-config"], capsys)[0] == 0
    monkeypatch.setenv(ENV_VAR, str(bad))
    assert main(["check-config"], capsys)[0] == 2


def test_check_config_option_wins_over_the_environment_variable(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", valid_config())
    bad = write_config(tmp_path / "bad.yaml", broken_config())
    env = clean_env(**{ENV_VAR: str(bad)})
    assert run("check-config", "-c", str(good), env=env).returncode == 0


def test_check_config_falls_back_to_gateway_yaml(tmp_path: Path) -> None:
    result = run("check-config", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "gateway.yaml" in output
    assert "not found" in output

    write_config(tmp_path / "gateway.yaml", valid_config())
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    write_config(tmp_path / "gateway.yaml", broken_config())
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert_problems_on_their_own_lines(result.stdout + result.stderr, BROKEN_PROBLEMS)


def test_empty_environment_variable_falls_back_to_gateway_yaml(tmp_path: Path) -> None:
    write_config(tmp_path / "gateway.yaml", valid_config())
    result = run("check-config", cwd=tmp_path, env=clean_env(**{ENV_VAR: ""}))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_config_substitutes_the_environment(tmp_path: Path) -> None:
    config = valid_config()
    config["session"]["secret"] = "${GATEWAY_SESSION_SECRET}"
    path = write_config(tmp_path / "gw.yaml", config)

    result = run("check-config", "-c", str(path))
    assert result.returncode == 2
    assert "GATEWAY_SESSION_SECRET" in result.stdout + result.stderr

    env = clean_env(GATEWAY_SESSION_SECRET=SESSION_SECRET)
    assert run("check-config", "-c", str(path), env=env).returncode == 0


# --- serve --------------------------------------------------------------------------------


def test_serve_with_an_invalid_config_exits_without_starting(tmp_path: Path) -> None:
    port = free_port()
    config = broken_config()
    config["server"]["bind"] = f"127.0.0.1:{port}"
    path = write_config(tmp_path / "gw.yaml", config)

    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        while process.poll() is None and time.monotonic() - started < 15:
            assert not port_is_listening(port), "serve bound its port with an invalid config"
            time.sleep(0.02)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2
    assert time.monotonic() - started < 15
    assert_problems_on_their_own_lines(out + err, BROKEN_PROBLEMS)
    assert "Traceback" not in out + err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free


def test_serve_with_a_missing_config_exits_2(tmp_path: Path) -> None:
    result = run("serve", "-c", str(tmp_path / "absent.yaml"), timeout=15)
    assert result.returncode == 2
    assert "not found" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _healthz(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/_gateway/healthz")
        return connection.getresponse().status
    finally:
        connection.close()


def test_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, config_port = free_port(), free_port()
    # The file says one address; --bind and --workers must win over it.
    path = write_config(tmp_path / "gw.yaml", valid_config(config_port))
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "-c",
            str(path),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                status = _healthz(port)
                break
            time.sleep(0.05)
        assert status == 200, (
            f"no healthz answer; log:\n{tmp_path.joinpath('serve.log').read_text()}"
        )
        assert not port_is_listening(config_port)

        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        code = process.wait(timeout=15)
        assert time.monotonic() - stopped < 10
        assert code == 0
        assert not port_is_listening(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in output
    assert APP_SECRET not in output
    assert SESSION_SECRET not in output


@pytest.mark.parametrize("bind", ["127.0.0.1:99999", "not an address"])
def test_serve_rejects_an_invalid_bind_without_a_traceback(bind: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "gw.yaml", valid_config())
    started = time.monotonic()
    result = run("serve", "-c", str(path), "--bind", bind, "--workers", "1", timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "--bind" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 5
