"""Two checkouts of the gateway side by side: CPU per proxied request, interleaved.

``python bench/compare.py OLD_CHECKOUT NEW_CHECKOUT`` starts the hello-world upstream and one
gateway from each checkout (``python -m gateway serve`` run in that directory, default
configuration), then runs wrk against them in turns, so that drift on a shared machine hits
both alike; the order alternates from round to round (old first, then new first), since
the second of two runs in a row is charged more CPU per request (about 5% when both sides
are the same checkout). It prints each round and the medians of req/s and of the gateway
processes' CPU time per request, and the new/old ratios, of the medians and within each
round: the check behind "no slowdown" in a refactoring.

``--new-setting server.log_format=json`` (repeatable) sets a key in the new checkout's
config only, for a setting the old one does not know; the value is read as YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import clients
import yaml
from run import gateway_config
from services import Service, cpu_seconds, ensure_system_packages, free_ports, gunicorn_argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout measured first in odd rounds")
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--new-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dotted config key and its YAML value, for the new checkout only",
    )
    args = parser.parse_args()
    new_settings = [_setting(item) for item in args.new_setting]
    ensure_system_packages()
    # Sealed by the old checkout's own code, which the new one must still read.
    cookie = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, 'bench'); import run; print(run.session_cookie())",
        ],
        cwd=args.old,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    headers = {"Cookie": f"wechat_gateway={cookie}"}
    with tempfile.TemporaryDirectory(prefix="wechat-gateway-compare-") as tmp:
        workdir = Path(tmp)
        script = clients.write_wrk_script(workdir)
        upstream_port, old_port, new_port = free_ports(3)
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                Service(
                    "upstream",
                    gunicorn_argv("apps:upstream", upstream_port),
                    upstream_port,
                    workdir,
                )
            )
            gateways = {}
            for label, checkout, port in (("old", args.old, old_port), ("new", args.new, new_port)):
                config = workdir / f"{label}.yaml"
                settings = gateway_config(port, upstream_port, upstream_port)
                if label == "new":
                    for keys, value in new_settings:
                        _put(settings, keys, value)
                config.write_text(yaml.safe_dump(settings), encoding="utf-8")
                argv = [sys.executable, "-m", "gateway", "serve", "-c", str(config)]
                gateways[label] = stack.enter_context(
                    Service(
                        f"gateway-{label}",
                        argv,
                        port,
                        workdir,
                        ready_path="/_gateway/healthz",
                        discard_stdout=True,
                        cwd=checkout.resolve(),
                    )
                )
            for label, service in gateways.items():
                status, _ = clients.get(service.port, "/hello", headers)
                if status != 200:
                    raise SystemExit(f"{label}: a signed-in GET answered {status}, not 200")
            cpu: dict[str, list[float]] = {"old": [], "new": []}
            rps: dict[str, list[float]] = {"old": [], "new": []}
            for round_ in range(args.rounds):
                order = list(gateways.items())
                for label, service in order if round_ % 2 == 0 else order[::-1]:
                    pids = service.pids()
                    before = cpu_seconds(pids)
                    run = clients.wrk(
                        f"http://127.0.0.1:{service.port}/hello",
                        args.connections,
                        args.duration,
                        script,
                        headers,
                    )
                    if run.error_count:
                        raise SystemExit(f"{label}: wrk saw errors {run.errors}")
                    used = cpu_seconds(pids) - before
                    cpu[label].append(used / run.requests * 1e6)
                    rps[label].append(run.rps)
                    print(
                        f"round {round_ + 1} {label}: {run.rps:8,.0f} req/s  "
                        f"{cpu[label][-1]:6.1f} µs CPU/req",
                        flush=True,
                    )
                    time.sleep(0.5)
    old_cpu, new_cpu = statistics.median(cpu["old"]), statistics.median(cpu["new"])
    old_rps, new_rps = statistics.median(rps["old"]), statistics.median(rps["new"])
    print(f"median old: {old_rps:,.0f} req/s, {old_cpu:.1f} µs CPU/req")
    print(f"median new: {new_rps:,.0f} req/s, {new_cpu:.1f} µs CPU/req")
    print(f"new/old CPU per request: {new_cpu / old_cpu:.3f}; req/s: {new_rps / old_rps:.3f}")
    # Within a round the two ran a few seconds apart: their ratio drifts less than either.
    cpu_ratios = [n / o for n, o in zip(cpu["new"], cpu["old"], strict=True)]
    rps_ratios = [n / o for n, o in zip(rps["new"], rps["old"], strict=True)]
    print(
        "new/old within each round, median (lowest to highest): "
        f"CPU per request {_spread(cpu_ratios)}; req/s {_spread(rps_ratios)}"
    )


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f} to {max(ratios):.3f})"


def _setting(item: str) -> tuple[list[str], Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--new-setting {item!r}: expected KEY=VALUE, e.g. server.log_format=json")
    return key.split("."), yaml.safe_load(value)


def _put(settings: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        settings = settings.setdefault(key, {})
    settings[keys[-1]] = value


if __name__ == "__main__":
    main()
