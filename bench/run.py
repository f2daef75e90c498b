"""The benchmark behind ``make bench``: the gateway side by side with the alternatives.

In one run, against the same fast upstream, it measures four contenders:

- the upstream itself, a gunicorn hello-world, with no proxy hop;
- Werkzeug's ``ProxyMiddleware`` under the gateway's gunicorn settings;
- nginx ``proxy_pass`` with upstream keepalive;
- the gateway (``python -m gateway serve``, default configuration);

for a 1 KB GET at 16 and 64 connections (wrk), and in fewer, shorter rounds at 1 and 256
connections (p50 latency, req/s: issue 16), a 256 MiB upload in three interleaved rounds
(MB/s, issue 16), a 1 GiB download and upload (MB/s and peak RSS), and 120 requests parked
on a 3 s upstream while a fast request goes through; then
WebSocket through the gateway, nginx and no proxy (``bench/websocket.py``). Beside the
gateway on the 1 KB GET run variants that differ from it in one setting each (state in
Redis, ``identity.assertion: false``, ``server.log_format: json``) and the hello-world on
the gateway's worker class. It also times the session cookie codec
(``bench/session_codec.py``) and signing and verifying the identity assertion
(``bench/assertion.py``), then writes
``docs/benchmarks.md``, the chart ``docs/benchmarks-rps.svg`` and the raw results in
``bench/results/``. Every process it starts is stopped again, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import assertion
import clients
import jwt
import report
import websocket
import yaml
from apps import HELLO, IDENTITY_PATH, bench_session
from services import (
    BENCH,
    ROOT,
    PeakRss,
    Service,
    cpu_seconds,
    ensure_system_packages,
    free_ports,
    gunicorn_argv,
    nginx_binary,
    nginx_config,
)

from gateway.auth.session import Session, SessionCodec
from gateway.state.redis import RedisStore

DOCS = ROOT / "docs"
RESULTS = BENCH / "results"
CHART = "benchmarks-rps.svg"
MIB = 1024 * 1024

_SESSION_SECRET = "bench-session-secret-0123456789abcdefghijklmnop"
_COOKIE_NAME = "wechat_gateway"
GATEWAY_WORKER = "gateway.server.worker.GatewayWorker"
_OPENID = "oBenchOpenID000000000000001"


@dataclasses.dataclass
class Contender:
    key: str
    label: str
    short: str
    service: Service
    setup: str
    #: Measured on the 1 KB GET only (no transfers, no slow-upstream case).
    reference: bool = False
    #: Serves the 1 KB itself: there is no upstream behind it to account for.
    is_upstream: bool = False

    @property
    def port(self) -> int:
        return self.service.port


def session_cookie() -> str:
    session = bench_session(openid=_OPENID)
    return SessionCodec(_SESSION_SECRET).encode(session)


def gateway_config(port: int, fast_port: int, slow_port: int) -> dict[str, Any]:
    """The default configuration, but for what must be set: where to listen and forward."""
    return {
        "public_url": f"http://127.0.0.1:{port}",
        "server": {"bind": f"127.0.0.1:{port}"},
        "wechat": {"app_id": "wxbench0123456789", "app_secret": "bench-app-secret"},
        "session": {"secret": _SESSION_SECRET},
        "upstreams": [
            {"prefix": "/", "url": f"http://127.0.0.1:{fast_port}"},
            {"prefix": "/slow", "url": f"http://127.0.0.1:{slow_port}"},
        ],
    }


#: ``--only`` parts: what each one measures besides the default gateway.
ONLY_PARTS = {
    "assertion": "the gateway with assertions off (identity.assertion: false), and the "
    "sign and verify cost per call",
    "logs": "the gateway with server.log_format: json",
    "hop": "the second hop (issue 16): the no-hop hello-world, nginx, the bare forwarder and "
    "the hello-world on the gateway's worker beside the gateway, also at the extra "
    "connection counts (1 and 256), and the interleaved upload rounds",
}


def gateway_variant(
    port: int, fast_port: int, slow_port: int, *, server: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """``gateway_config`` with ``server`` keys added to its own and other sections set."""
    settings = gateway_config(port, fast_port, slow_port)
    settings["server"] = {**settings["server"], **(server or {})}
    return {**settings, **extra}


def start_gateway(
    stack: contextlib.ExitStack, name: str, settings: dict[str, Any], workdir: Path
) -> Service:
    """``python -m gateway serve`` on ``settings`` (checked first with ``check-config``)."""
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if check.returncode != 0:
        raise RuntimeError(f"the generated config of {name} is invalid:\n{check.stderr}")
    port = int(settings["server"]["bind"].rsplit(":", 1)[1])
    return stack.enter_context(
        Service(
            name,
            [sys.executable, "-m", "gateway", "serve", "-c", str(config)],
            port,
            workdir,
            ready_path="/_gateway/healthz",
            # The access log stays on, as by default, but is not kept.
            discard_stdout=True,
        )
    )


def _first_line(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def _load_average() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    system = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip('"')
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return {
        "load average at start (1, 5, 15 min)": _load_average(),
        "CPUs (usable)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu,
        "memory": memory,
        "OS": system,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "gevent": version("gevent"),
        "Werkzeug": version("werkzeug"),
        "nginx": _first_line([nginx_binary() or "nginx", "-v"]).split("/", 1)[-1],
        "wrk": _first_line(["wrk", "-v"]).split()[1],
        "wechat-gateway": f"{version('wechat-gateway')} ({commit or 'not a git checkout'})",
    }


@dataclasses.dataclass
class Started:
    """What ``start_services`` started: the contenders, every server, the upstream behind
    the contenders, and the URL of the Redis the two Redis-state replicas share (None with
    ``--only``)."""

    contenders: list[Contender]
    services: list[Service]
    upstream: Service
    redis_url: str | None


def _no_hop_contender(fast: Service) -> Contender:
    return Contender(
        "no_hop",
        "gunicorn hello-world, no hop",
        "hello-world (no hop)",
        fast,
        "wrk straight to the fast upstream.",
        is_upstream=True,
    )


def _start_nginx(
    stack: contextlib.ExitStack, workdir: Path, port: int, fast_port: int, slow_port: int
) -> Contender:
    prefix = workdir / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, fast_port, slow_port), encoding="utf-8")
    nginx_argv = [nginx_binary() or "nginx", "-p", str(prefix), "-e", str(prefix / "error.log")]
    nginx = stack.enter_context(Service("nginx", [*nginx_argv, "-c", str(conf)], port, workdir))
    return Contender(
        "nginx",
        "nginx proxy_pass",
        "nginx",
        nginx,
        "2 worker processes, `proxy_pass` to an `upstream` block with `keepalive 64`, "
        "HTTP/1.1 upstream, `proxy_request_buffering off` and "
        "`proxy_max_temp_file_size 0` (bodies stream, nothing is spooled to disk), "
        "default proxy buffer sizes, access log off.",
    )


def _start_hello_on_gateway_worker(
    stack: contextlib.ExitStack, workdir: Path, port: int
) -> Contender:
    service = stack.enter_context(
        Service(
            "upstream-on-gateway-worker",
            gunicorn_argv("apps:upstream", port, worker_class=GATEWAY_WORKER),
            port,
            workdir,
        )
    )
    return Contender(
        "no_hop_gateway_worker",
        "hello-world on the gateway's worker, no hop (reference)",
        "hello, gateway worker",
        service,
        "the fast upstream's app on the gateway's worker class, otherwise the same "
        "settings, wrk straight to it. Not a target of req/s: it shows what the worker alone "
        "does for any app; the req/s targets compare the gateway with the upstream as it is "
        "deployed, on gunicorn's own gevent worker. The CPU target (issue 16) compares the "
        "gateway's CPU per request with this row's: the same worker, without the hop.",
        reference=True,
        is_upstream=True,
    )


def _start_bare_forwarder(
    stack: contextlib.ExitStack, workdir: Path, port: int, fast_port: int
) -> Contender:
    service = stack.enter_context(
        Service(
            "bare-forwarder",
            gunicorn_argv("apps:bare_forwarder", port, worker_class=GATEWAY_WORKER),
            port,
            workdir,
            env={
                "BENCH_UPSTREAM": f"http://127.0.0.1:{fast_port}",
                "BENCH_PUBLIC_URL": f"http://127.0.0.1:{port}",
            },
        )
    )
    return Contender(
        "bare_forwarder",
        "the gateway's forwarder alone, on the gateway's worker (reference)",
        "bare forwarder",
        service,
        "`bench/apps.py`'s `bare_forwarder`: the gateway's `Forwarder` (the second hop, as "
        "the gateway runs it) on the gateway's worker class, with the upstream's settings, "
        "and nothing else: no session, access rule, identity header, assertion, metric or "
        "access line. Not a target: it is the floor under the gateway's CPU per request, "
        "what the hop costs before the gateway does anything of its own.",
        reference=True,
    )


def start_services(
    stack: contextlib.ExitStack, workdir: Path, only: list[str] | None = None
) -> Started:
    """Every server, each stopped when ``stack`` closes. With ``only``: the upstream, the
    default gateway and the variants those parts of ``ONLY_PARTS`` compare with it (for
    ``hop``: the no-hop hello-world, nginx and the hello-world on the gateway's worker)."""
    ports = free_ports(12)
    fast_port, slow_port, proxy_port, nginx_port, gateway_port, worker_port = ports[:6]
    redis_port, replica_port, other_replica_port = ports[6:9]
    no_assertion_port, json_port, bare_port = ports[9:]
    fast = stack.enter_context(
        Service("upstream", gunicorn_argv("apps:upstream", fast_port), fast_port, workdir)
    )
    gateway = start_gateway(
        stack, "gateway", gateway_variant(gateway_port, fast_port, slow_port), workdir
    )
    gateway_contender = Contender(
        "gateway",
        "wechat-gateway",
        "wechat-gateway",
        gateway,
        "`python -m gateway serve` with the default configuration except `public_url`, "
        "`server.bind` and the upstreams (`/` to the fast upstream, `/slow` to the slow "
        "one): gunicorn gevent, 2 workers, 1000 connections each, access log on "
        "(written to /dev/null), `X-WeChat-Assertion` on (signed with a key generated in "
        "the embedded store), text log lines, metrics on. Its gevent worker is the gateway's "
        "own (`gateway.server.worker.GatewayWorker`: gunicorn's gevent worker that sends a "
        "response head with the first body piece and does less per request), while the "
        "upstream, the hello-world and ProxyMiddleware run gunicorn's stock gevent worker.",
    )
    variants: list[Contender] = []
    wanted = set(ONLY_PARTS) if only is None else set(only)
    if "assertion" in wanted:
        settings = gateway_variant(
            no_assertion_port, fast_port, slow_port, identity={"assertion": False}
        )
        variants.append(
            Contender(
                "gateway_no_assertion",
                "wechat-gateway, assertions off",
                "gateway, no assertion",
                start_gateway(stack, "gateway-no-assertion", settings, workdir),
                "the gateway as above with `identity.assertion: false`: no "
                "`X-WeChat-Assertion` is signed or sent, the rest of the identity headers "
                "are. The same signed-in session on every request, so the gateway above "
                "signs once per worker and then reuses its assertion (for 4 minutes).",
                reference=True,
            )
        )
    if "logs" in wanted:
        settings = gateway_variant(json_port, fast_port, slow_port, server={"log_format": "json"})
        variants.append(
            Contender(
                "gateway_json",
                "wechat-gateway, log_format: json",
                "gateway, JSON logs",
                start_gateway(stack, "gateway-json", settings, workdir),
                "the gateway as above with `server.log_format: json`: every line, the access "
                "line of each request included (on, as by default, written to /dev/null), "
                "one JSON object with the request id.",
                reference=True,
            )
        )
    if only is not None:
        contenders = [gateway_contender, *variants]
        if "hop" in wanted:
            nginx = _start_nginx(stack, workdir, nginx_port, fast_port, slow_port)
            on_worker = _start_hello_on_gateway_worker(stack, workdir, worker_port)
            bare = _start_bare_forwarder(stack, workdir, bare_port, fast_port)
            contenders = [_no_hop_contender(fast), nginx, *contenders, on_worker, bare]
        services = [c.service for c in contenders if c.service is not fast]
        return Started(contenders, [fast, *services], fast, None)

    on_gateway_worker = _start_hello_on_gateway_worker(stack, workdir, worker_port)
    bare_forwarder = _start_bare_forwarder(stack, workdir, bare_port, fast_port)
    slow = stack.enter_context(
        Service(
            "slow-upstream",
            gunicorn_argv("apps:upstream", slow_port, workers=1),
            slow_port,
            workdir,
            env={"BENCH_SLOW_SECONDS": "3"},
        )
    )
    proxy = stack.enter_context(
        Service(
            "proxy-middleware",
            gunicorn_argv("apps:proxy_middleware", proxy_port),
            proxy_port,
            workdir,
            env={
                "BENCH_UPSTREAM": f"http://127.0.0.1:{fast_port}",
                "BENCH_SLOW_UPSTREAM": f"http://127.0.0.1:{slow_port}",
            },
        )
    )
    nginx = _start_nginx(stack, workdir, nginx_port, fast_port, slow_port)

    redis_url = stack.enter_context(redis_server(redis_port, workdir))
    replicas = [
        start_gateway(
            stack,
            name,
            gateway_variant(port, fast_port, slow_port, state={"url": redis_url}),
            workdir,
        )
        for name, port in (("gateway-redis", replica_port), ("gateway-redis-b", other_replica_port))
    ]
    werkzeug = version("werkzeug")
    contenders = [
        _no_hop_contender(fast),
        Contender(
            "proxy_middleware",
            "Werkzeug ProxyMiddleware",
            "ProxyMiddleware",
            proxy,
            f"Werkzeug {werkzeug} `ProxyMiddleware` (`bench/apps.py`) under the same gunicorn "
            "settings as the gateway (gevent, 2 workers, 1000 connections each), no access "
            "log. It opens a new upstream connection for every request (it sends "
            "`Connection: close`).",
        ),
        nginx,
        gateway_contender,
        # Next to the gateway, so that within a round they run one after the other.
        *variants,
        on_gateway_worker,
        bare_forwarder,
        Contender(
            "gateway_redis",
            "wechat-gateway, state in Redis",
            "gateway (Redis)",
            replicas[0],
            "the gateway as above, but with `state.url` on a local `redis-server` (no "
            "persistence), one of two replicas sharing it: what a scaled-out deployment "
            "costs per request next to the embedded SQLite store. The other replica answers "
            "the revocation measurement.",
            reference=True,
        ),
    ]
    services = [fast, slow, proxy, nginx.service, gateway]
    services += [*(c.service for c in variants), on_gateway_worker.service]
    services += [bare_forwarder.service, *replicas]
    return Started(contenders, services, fast, redis_url)


@contextlib.contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[str]:
    """A ``redis-server`` on loopback for the replicas; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def revocation_latency(redis_url: str, port: int, count: int) -> list[float]:
    """Seconds from a revocation written to Redis until another replica refuses the session,
    ``count`` times: a fresh session each time, polled every 2 ms."""
    store = RedisStore(redis_url, session_max_age=86400)
    codec = SessionCodec(_SESSION_SECRET)
    latencies = []
    for i in range(count):
        now = int(time.time())
        session = Session(
            openid="oBenchOpenID000000000000001",
            app_id="wxbench0123456789",
            unionid=None,
            nickname="Bench",
            avatar="",
            issued_at=now,
            expires_at=now + 3600,
            sid=f"bench-{now}-{i}",
        )
        headers = {"Cookie": f"{_COOKIE_NAME}={codec.encode(session)}"}
        status, _ = clients.get(port, "/hello", headers)
        if status != 200:
            raise RuntimeError(f"a fresh session was answered {status}")
        start = time.monotonic()
        store.revoke(sids=[(session.sid, float(session.expires_at))], now=time.time())
        while clients.get(port, "/hello", headers)[0] == 200:
            if time.monotonic() - start > 10:
                raise RuntimeError("a revocation was not seen within 10 s")
            time.sleep(0.002)
        latencies.append(time.monotonic() - start)
    store.close()
    return latencies


def preflight(contenders: list[Contender], headers: dict[str, str]) -> None:
    """Each contender must answer the 1 KB GET with a 200 and the very bytes: no redirect."""
    for contender in contenders:
        status, body = clients.get(contender.port, "/hello", headers)
        if status != 200 or body != HELLO:
            raise RuntimeError(
                f"{contender.label} answered /hello with {status} and {len(body)} bytes"
            )
        if contender.key.startswith("gateway"):
            _check_gateway_variant(contender, headers)


def _check_gateway_variant(contender: Contender, headers: dict[str, str]) -> None:
    """A gateway variant must differ in what it claims to: an assertion the upstream can
    verify against the gateway's JWKS, or none when they are off; JSON log lines."""
    status, body = clients.get(contender.port, IDENTITY_PATH, headers)
    if status != 200:
        raise RuntimeError(f"{contender.label} answered {IDENTITY_PATH} with {status}")
    token = json.loads(body)["assertion"]
    if contender.key == "gateway_no_assertion":
        if token is not None:
            raise RuntimeError(f"{contender.label} sent X-WeChat-Assertion")
    else:
        if token is None:
            raise RuntimeError(f"{contender.label} sent no X-WeChat-Assertion")
        status, jwks = clients.get(contender.port, "/_gateway/jwks.json", {})
        key = jwt.PyJWKSet.from_json(jwks.decode())[jwt.get_unverified_header(token)["kid"]]
        origin = f"http://127.0.0.1:{contender.port}"
        claims = jwt.decode(token, key, algorithms=["ES256"], audience=origin, issuer=origin)
        if claims["openid"] != _OPENID:
            raise RuntimeError(f"{contender.label} asserted {claims['openid']}")
    if contender.key == "gateway_json":
        lines = [line for line in contender.service.log_lines() if line.strip()]
        if not lines or not all(line.startswith("{") for line in lines):
            raise RuntimeError(f"{contender.label} logged other lines than JSON: {lines[:3]}")
        for line in lines:
            json.loads(line)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    headers = {"Cookie": f"{_COOKIE_NAME}={session_cookie()}"}
    script = clients.write_wrk_script(workdir)
    results: dict[str, Any] = {
        "settings": {
            "duration": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "transfer_size": args.transfer_mib * MIB,
            "slow_requests": args.slow_requests,
            "slow_seconds": 3.0,
            "probe_after": 0.5,
            # Issue 16: shorter, fewer rounds at these counts; [] when not measured.
            "extra_connections": extra_connections(args),
            "extra_runs": args.extra_runs,
            "extra_duration": args.extra_duration,
            # Issue 16: the upload MB/s rounds; None when not measured.
            "upload_size": args.upload_mib * MIB if measures_uploads(args) else None,
            "upload_rounds": args.upload_rounds if measures_uploads(args) else 0,
        },
        "command": "make bench",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "throughput": {},
        "transfers": {},
        "slow": {},
    }
    if args.only:
        results["only"] = args.only
        results["command"] = f"python bench/run.py --only {' '.join(args.only)}"
    with contextlib.ExitStack() as stack:
        started = start_services(stack, workdir, args.only)
        contenders, services, redis_url = started.contenders, started.services, started.redis_url
        try:
            run_all(args, results, contenders, started.upstream, headers, script)
            if "assertion" in (args.only or ONLY_PARTS):
                # In this process, with the servers idle.
                results["assertion"] = assertion.measure()
                print(report.assertion_table(results["assertion"]), flush=True)
            if redis_url is not None:
                other = next(s for s in services if s.name == "gateway-redis-b")
                latencies = revocation_latency(redis_url, other.port, args.revocations)
                results["revocation_seconds"] = latencies
                p50 = report.percentile(latencies, 50) * 1000
                p99 = report.percentile(latencies, 99) * 1000
                print(
                    f"revocation seen by the other replica: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                    f" ({len(latencies)} revocations)",
                    flush=True,
                )
        except Exception:
            for service in services:
                print(f"--- {service.name} log (last lines) ---\n{service.log_tail()}")
            raise
        results["log_problems"] = {s.name: s.problems() for s in services if s.problems()}
    if not args.no_websocket and not args.only:
        # After the HTTP contenders have stopped; its own processes (bench/websocket.py).
        results["websocket"] = websocket.measure(workdir, websocket.Settings())
    results["contenders"] = [
        {"key": c.key, "label": c.label, "short": c.short, "setup": c.setup} for c in contenders
    ]
    results["references"] = [c.key for c in contenders if c.reference]
    cpus = results["machine"]["CPUs (usable)"]
    results["setup_notes"] = [
        "**fast upstream**: `bench/apps.py` `upstream` under gunicorn with the gateway's "
        "default server settings (gevent worker class, 2 workers, 1000 connections each, "
        "keep-alive 5 s), no access log. `/hello` is 1 KB of text/plain; "
        "`/download/<n>` generates n bytes with a Content-Length; `/upload` reads and "
        "discards the body and answers with its length, which the client checks.",
        "**slow upstream**: the same app and settings with 1 worker; each `/slow/…` "
        "request sleeps 3 s before answering.",
        "**load**: wrk with keep-alive and min(connections, CPUs, 4) threads; Python "
        "clients for the transfers and the slow-upstream case. Everything runs on "
        f"127.0.0.1 and shares the machine's {cpus} CPUs: client, proxy and upstream "
        "compete for them, as they would not in production.",
    ]
    if not args.only:
        results["session_codec"] = subprocess.run(
            [sys.executable, str(BENCH / "session_codec.py")],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    return results


def measures_hop(args: argparse.Namespace) -> bool:
    """Whether this run measures issue 16's second-hop figures (a full run, or ``--only hop``)."""
    return not args.only or "hop" in args.only


def extra_connections(args: argparse.Namespace) -> list[int]:
    """The extra wrk connection counts this run measures (those not already main counts)."""
    if not measures_hop(args) or args.extra_runs < 1:
        return []
    return [n for n in dict.fromkeys(args.extra_connections) if n not in args.connections]


def measures_uploads(args: argparse.Namespace) -> bool:
    return measures_hop(args) and args.upload_rounds > 0 and args.upload_mib > 0


def wrk_schedule(args: argparse.Namespace) -> list[list[tuple[int, float]]]:
    """For each round, its wrk runs as (connections, seconds), fewest connections first: the
    main counts in each of the ``--runs`` rounds, the extra counts (``--extra-duration``
    seconds each) in the first ``--extra-runs`` rounds."""
    extra = extra_connections(args)
    rounds = max(args.runs, args.extra_runs if extra else 0)
    schedule = []
    for round_ in range(1, rounds + 1):
        plan = [(n, float(args.duration)) for n in args.connections if round_ <= args.runs]
        plan += [(n, float(args.extra_duration)) for n in extra if round_ <= args.extra_runs]
        schedule.append(sorted(plan))
    return schedule


@contextlib.contextmanager
def _step(contender: Contender, what: str) -> Iterator[None]:
    """Name the contender and the measurement in any error raised inside."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"while measuring {what} on {contender.label}")
        raise


def run_all(
    args: argparse.Namespace,
    results: dict[str, Any],
    contenders: list[Contender],
    upstream: Service,
    headers: dict[str, str],
    script: Path,
) -> None:
    preflight(contenders, headers)
    width = max(len(c.label) for c in contenders)
    counts = [*args.connections, *extra_connections(args)]
    for contender in contenders:
        with _step(contender, "the warm-up"):
            url = f"http://127.0.0.1:{contender.port}/hello"
            clients.wrk(url, max(args.connections), 2, script, headers)
        results["throughput"][contender.key] = {str(n): [] for n in counts}
    pids = {c.key: c.service.pids() for c in contenders}
    upstream_pids = upstream.pids()
    for contender in contenders:
        if not pids[contender.key]:
            raise RuntimeError(f"{contender.label} is not running:\n{contender.service.log_tail()}")
    # Rounds interleave the contenders, so a noisy minute hits them all alike; every other
    # round runs them in reverse order, since the later of two runs in a row tends to be
    # charged more CPU per request (a few percent when both are the same server).
    # The extra connection counts (issue 16: 1 and 256) run in the first rounds only, and
    # shorter, to keep the whole run near a quarter of an hour.
    for round_, plan in enumerate(wrk_schedule(args), start=1):
        for connections, seconds in plan:
            for contender in contenders if round_ % 2 else contenders[::-1]:
                own = pids[contender.key]
                before = cpu_seconds(own), cpu_seconds(upstream_pids)
                with _step(contender, f"1 KB GETs at {connections} connections"):
                    url = f"http://127.0.0.1:{contender.port}/hello"
                    run = clients.wrk(url, connections, seconds, script, headers)
                after = cpu_seconds(own), cpu_seconds(upstream_pids)
                if sorted(pids[contender.key]) != sorted(contender.service.pids()):
                    raise RuntimeError(f"{contender.label}: a worker died or was replaced")
                record = dataclasses.asdict(run)
                record["cpu_us_per_request"] = (after[0] - before[0]) / run.requests * 1e6
                # For a no-hop contender its own processes are the upstream.
                record["upstream_cpu_us_per_request"] = (
                    None if contender.is_upstream else (after[1] - before[1]) / run.requests * 1e6
                )
                results["throughput"][contender.key][str(connections)].append(record)
                errors = f", {run.error_count} errors" if run.error_count else ""
                print(
                    f"{contender.label:<{width}}  {connections:>3} conns  run {round_}: "
                    f"{run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                    f"p99 {run.p99_ms:6.2f} ms  CPU {record['cpu_us_per_request']:5.0f} "
                    f"µs/req{errors}",
                    flush=True,
                )
    if measures_uploads(args):
        upload_rounds(args, results, contenders, upstream, headers, width)
    if args.only:
        return

    size = args.transfer_mib * MIB
    for contender in contenders:
        if contender.reference:
            continue
        transfers: dict[str, Any] = {}
        for direction, transfer in (("download", clients.download), ("upload", clients.upload)):
            time.sleep(1)
            with _step(contender, f"the {direction}"), PeakRss(contender.service.pids()) as rss:
                seconds = transfer(contender.port, size, headers)
            result = clients.Transfer(direction, size, seconds, rss.baseline, rss.peak)
            transfers[direction] = dataclasses.asdict(result)
            print(
                f"{contender.label:<{width}}  {direction:<8}  {result.mb_per_s:7,.0f} MB/s  "
                f"RSS {rss.baseline / MIB:6.1f} -> {rss.peak / MIB:6.1f} MiB "
                f"(+{result.rss_growth / MIB:.1f})",
                flush=True,
            )
        results["transfers"][contender.key] = transfers

    for contender in contenders:
        if contender.is_upstream:
            continue
        time.sleep(1)
        with _step(contender, "the slow-upstream case"):
            slow = clients.slow_upstream(contender.port, headers, requests=args.slow_requests)
        results["slow"][contender.key] = dataclasses.asdict(slow)
        print(
            f"{contender.label:<{width}}  slow upstream: fast request "
            f"{slow.probe_seconds * 1000:.1f} ms (status {slow.probe_status}, "
            f"{slow.in_flight_at_probe} in flight); {slow.succeeded}/{slow.requests} ok "
            f"in {slow.all_done_seconds:.2f} s",
            flush=True,
        )


def upload_rounds(
    args: argparse.Namespace,
    results: dict[str, Any],
    contenders: list[Contender],
    upstream: Service,
    headers: dict[str, str],
    width: int,
) -> None:
    """Issue 16's upload MB/s: ``--upload-mib`` POSTed to each contender (not the references)
    ``--upload-rounds`` times, contenders interleaved as in the GET rounds, with the CPU time
    the contender's processes and the upstream's spent on each."""
    size = args.upload_mib * MIB
    chosen = [c for c in contenders if not c.reference]
    results["uploads"] = {c.key: [] for c in chosen}
    upstream_pids = upstream.pids()
    for round_ in range(1, args.upload_rounds + 1):
        for contender in chosen if round_ % 2 else chosen[::-1]:
            time.sleep(0.5)
            own = contender.service.pids()
            before = cpu_seconds(own), cpu_seconds(upstream_pids)
            with _step(contender, f"the {args.upload_mib} MiB upload of round {round_}"):
                seconds = clients.upload(contender.port, size, headers)
            after = cpu_seconds(own), cpu_seconds(upstream_pids)
            record = {
                "size": size,
                "seconds": seconds,
                "cpu_seconds": after[0] - before[0],
                "upstream_cpu_seconds": None if contender.is_upstream else after[1] - before[1],
            }
            results["uploads"][contender.key].append(record)
            behind = (
                ""
                if record["upstream_cpu_seconds"] is None
                else f", upstream {record['upstream_cpu_seconds']:.2f} s"
            )
            print(
                f"{contender.label:<{width}}  upload {args.upload_mib} MiB  round {round_}: "
                f"{size / 1e6 / seconds:7,.0f} MB/s  CPU {record['cpu_seconds']:.2f} s{behind}",
                flush=True,
            )


def write_report(results: dict[str, Any]) -> None:
    if results.get("only"):
        raise SystemExit("a run with --only is partial: it cannot make docs/benchmarks.md")
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(report.markdown(results, CHART), encoding="utf-8")
    (DOCS / CHART).write_text(report.rps_chart(results), encoding="utf-8")
    print(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / CHART}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=5, help="wrk rounds; the median is kept")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[16, 64], help="wrk connection counts"
    )
    parser.add_argument(
        "--extra-connections",
        type=int,
        nargs="*",
        default=[1, 256],
        help="wrk connection counts also measured, in fewer and shorter rounds (issue 16: "
        "p50 latency at 1, req/s at 256); none to skip them",
    )
    parser.add_argument(
        "--extra-runs", type=int, default=3, help="rounds at the extra connection counts"
    )
    parser.add_argument(
        "--extra-duration", type=float, default=5, help="seconds per wrk run at the extra counts"
    )
    parser.add_argument(
        "--transfer-mib", type=int, default=1024, help="download/upload size in MiB"
    )
    parser.add_argument(
        "--upload-mib",
        type=int,
        default=256,
        help="size of the interleaved upload rounds (issue 16's MB/s comparison)",
    )
    parser.add_argument(
        "--upload-rounds", type=int, default=3, help="upload rounds (median kept); 0 to skip"
    )
    parser.add_argument("--slow-requests", type=int, default=120, help="requests to park")
    parser.add_argument(
        "--revocations", type=int, default=100, help="revocations timed across replicas"
    )
    parser.add_argument(
        "--no-websocket", action="store_true", help="skip the WebSocket part (bench/websocket.py)"
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="keep docs/ as is; only save the raw results"
    )
    parser.add_argument(
        "--report", metavar="JSON", help="rebuild docs/ from saved results, measure nothing"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(ONLY_PARTS),
        help="a quick partial run: the upstream, the default gateway and, side by side on "
        "the 1 KB GET, the variant of each part named ("
        + "; ".join(f"{name}: {what}" for name, what in ONLY_PARTS.items())
        + "); their targets are printed, the results saved, docs/ left as is",
    )
    args = parser.parse_args()

    if args.report:
        write_report(json.loads(Path(args.report).read_text(encoding="utf-8")))
        return

    signal.signal(signal.SIGTERM, _terminate)
    ensure_system_packages()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wechat-gateway-bench-"))
    try:
        results = measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["wall_seconds"] = time.monotonic() - started
    machine_info = results["machine"]
    start_key = "load average at start (1, 5, 15 min)"
    results["machine"] = {
        start_key: machine_info.pop(start_key),
        "load average at end (1, 5, 15 min)": _load_average(),
        **machine_info,
    }

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    saved = RESULTS / f"{stamp}{''.join(f'-{part}' for part in args.only or ())}.json"
    saved.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {saved}")
    for name, measured, ok in report.targets(results):
        print(f"{report.verdict_word(ok)}  {name}: {measured}")
    if not args.no_docs and not args.only:
        write_report(results)


if __name__ == "__main__":
    main()
