"""Two checkouts of the gateway side by side: CPU per proxied request, interleaved.

``python bench/compare.py OLD_CHECKOUT NEW_CHECKOUT`` starts the hello-world upstream and one
gateway from each checkout (``python -m gateway serve`` run in that directory, default
configuration), then runs wrk against them in turns, so that drift on a shared machine hits
both alike. It prints each round and the medians of req/s and of the gateway processes' CPU
time per request, and the new/old ratio: the check behind "no slowdown" in a refactoring.
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

import clients
import yaml
from run import gateway_config
from services import Service, cpu_seconds, ensure_system_packages, free_ports, gunicorn_argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout measured first in every round")
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
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
                for label, service in gateways.items():
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


if __name__ == "__main__":
    main()
