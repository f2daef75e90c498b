"""Flame graphs of the gateway under load: where its CPU time goes (issue 16).

``python bench/flames.py`` starts the fast upstream and the gateway the way
``bench/run.py`` does (``python -m gateway serve``, the default configuration, the gateway's
own gevent worker, 2 workers, the same upstream app under gunicorn), then records them with
py-spy (``py-spy record --subprocesses --native --function --format flamegraph``, the
gateway's master and both workers, idle time left out):

- ``get-16.svg``: wrk, 16 keep-alive connections, the 1 KB GET with a signed-in session
  cookie, as in ``make bench``;
- ``upload.svg``: 256 MiB uploads (``POST /upload``, 1 MiB writes), one after another for
  as long as py-spy records.

The SVGs go to ``docs/profiles/`` (``--out``), and the top frames of each (self time and
total time per function, and self time per package) are printed: ``--summarize SVG...``
prints them again for saved flame graphs, measuring nothing. py-spy is installed into the
running virtualenv when missing; it needs ptrace (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import clients
from apps import HELLO
from run import _COOKIE_NAME, gateway_variant, session_cookie, start_gateway
from services import ROOT, Service, ensure_system_packages, free_ports, gunicorn_argv

MIB = 1024 * 1024
CASES = ("get", "upload")
_SVG = "{http://www.w3.org/2000/svg}"
_FG = "{http://github.com/jonhoo/inferno}"
# "name (path:line) (1,234 samples, 5.67%)", as py-spy's flame graph titles a frame.
_TITLE = re.compile(r"^(?P<frame>.*) \((?P<samples>[\d,]+) samples?, [\d.]+%\)$")


def py_spy() -> str:
    """The py-spy next to this Python (installed with pip when missing), or one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if not beside.exists() and shutil.which("py-spy") is None:
        print("profile: installing py-spy into the virtualenv", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit("profile: py-spy is not installed and could not be")
    return found


def record(
    binary: str, pid: int, output: Path, seconds: float, rate: int, native: bool
) -> tuple[bool, str]:
    """``py-spy record`` on ``pid`` and its subprocesses into an SVG; (native, py-spy's output).
    Falls back to Python frames only when native unwinding fails."""
    argv = [binary, "record", "--pid", str(pid), "--subprocesses", "--function"]
    argv += ["--rate", str(rate), "--duration", f"{seconds:g}", "--format", "flamegraph"]
    argv += ["--output", str(output)]
    if native:
        done = subprocess.run([*argv, "--native"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and output.exists() and output.stat().st_size > 0:
            return True, done.stdout + done.stderr
        print(
            f"profile: py-spy --native failed ({done.returncode}), recording Python frames "
            f"only:\n{(done.stdout + done.stderr).strip()[-2000:]}",
            flush=True,
        )
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"py-spy record failed:\n{done.stdout}\n{done.stderr}")
    return False, done.stdout + done.stderr


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds the processes ``pids`` have used so far."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def under_load(load: Callable[[threading.Event], str], start: Callable[[], object]) -> str:
    """Run ``load`` in a thread until ``start`` (the recording) returns; load's summary."""
    stop = threading.Event()
    summary: list[str] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            summary.append(load(stop))
        except BaseException as exc:  # reported in the main thread
            failure.append(exc)
            stop.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    time.sleep(2)  # let the load settle before sampling
    try:
        if not failure:
            start()
    finally:
        stop.set()
        thread.join(timeout=600)
    if failure:
        raise failure[0]
    return summary[0] if summary else ""


def wrk_load(
    port: int, connections: int, seconds: float, headers: dict[str, str], workdir: Path
) -> Callable[[threading.Event], str]:
    script = clients.write_wrk_script(workdir)

    def load(stop: threading.Event) -> str:
        url = f"http://127.0.0.1:{port}/hello"
        run = clients.wrk(url, connections, seconds, script, headers)
        if run.error_count:
            raise RuntimeError(f"wrk saw errors while profiling: {run.errors}")
        return (
            f"wrk {connections} connections, {seconds:g} s: {run.rps:,.0f} req/s, "
            f"p50 {run.p50_ms:.2f} ms (py-spy pauses the workers to sample them)"
        )

    return load


def upload_load(port: int, size: int, headers: dict[str, str]) -> Callable[[threading.Event], str]:
    def load(stop: threading.Event) -> str:
        rates = []
        while not stop.is_set():
            rates.append(size / 1e6 / clients.upload(port, size, headers))
        return (
            f"{len(rates)} uploads of {size // MIB} MiB, "
            f"{min(rates):,.0f} to {max(rates):,.0f} MB/s (py-spy pauses the workers to "
            "sample them)"
        )

    return load


@dataclasses.dataclass
class Frame:
    name: str
    depth: int
    start: int
    samples: int
    children: list[Frame] = dataclasses.field(default_factory=list)
    #: ``samples`` less those in idle frames under it (see ``IDLE_FRAMES``).
    busy: int = 0


def read_flamegraph(path: Path) -> list[Frame]:
    """The frames of a py-spy (inferno) flame graph with their sample counts, as trees: the
    roots are the processes (recorded with ``--subprocesses``)."""
    root = ET.parse(path).getroot()
    frames = []
    for group in root.iter(f"{_SVG}g"):
        title, rect = group.find(f"{_SVG}title"), group.find(f"{_SVG}rect")
        if title is None or rect is None or title.text is None:
            continue
        match = _TITLE.match(title.text.strip())
        start = rect.get(f"{_FG}x")
        if match is None or start is None:
            continue
        frames.append(
            Frame(
                name=match["frame"],
                depth=round(float(rect.get("y", "0"))),
                start=int(start),
                samples=int(match["samples"].replace(",", "")),
            )
        )
    # py-spy draws an icicle graph (``inverted``): the root row on top, the smallest y.
    inverted = "var inverted = true" in path.read_text(encoding="utf-8")
    rows = sorted({f.depth for f in frames}, reverse=not inverted)
    level = {y: i for i, y in enumerate(rows)}
    by_depth: dict[int, list[Frame]] = defaultdict(list)
    for frame in sorted(frames, key=lambda f: (level[f.depth], f.start)):
        frame.depth = level[frame.depth]
        by_depth[frame.depth].append(frame)
    for depth, row in by_depth.items():
        if depth == 0:
            continue
        for frame in row:
            for parent in by_depth[depth - 1]:
                if parent.start <= frame.start < parent.start + parent.samples:
                    parent.children.append(frame)
                    break
    tops = by_depth[0]
    if len(tops) == 1 and tops[0].name == "all":
        return tops[0].children
    return tops


#: Frames that only wait, yet which py-spy's idle heuristic (the thread's state read just
#: before each sample) samples now and then, much more on a busy machine: the gevent thread
#: pool's idle worker thread (gevent marks that frame ``gevent_threadpool_worker_idle``) and
#: the gunicorn master waiting for a signal.
IDLE_FRAMES = (
    "acquire_with_timeout (gevent/_threading.py",
    "_Condition.wait (gevent/_threading.py",
    "Arbiter.wait_for_signals (gunicorn/arbiter.py",
)


def _package(frame: str) -> str:
    """Where a frame's code lives: ``gateway/proxy``, ``gevent``, ``gunicorn``, ``libc``."""
    match = re.search(r"\(([^()]*)\)$", frame)
    where = match[1].rsplit(":", 1)[0] if match else frame
    if where.startswith("gateway/"):
        return "/".join(where.split("/")[:2]).removesuffix(".py")
    first = re.split(r"[/.]", where, maxsplit=1)[0]
    return first or where


def _plumbing(frame: str) -> bool:
    """Frames that every stack passes through and that say nothing: greenlet's C++ switch
    machinery, unresolved addresses."""
    return frame.startswith(("greenlet::", "0x")) or "(greenlet/" in frame


def _busy(frame: Frame, idle: tuple[str, ...] = IDLE_FRAMES) -> int:
    """``frame.samples`` less the samples of idle frames under it (and sets it on each)."""
    if frame.name.startswith(idle):
        frame.busy = 0
    else:
        frame.busy = frame.samples - sum(c.samples - _busy(c, idle) for c in frame.children)
    return frame.busy


def summarize(path: Path, top: int = 20, leave_out: tuple[str, ...] = ()) -> str:
    """The top frames of a flame graph by self time and by total time, and self time per
    package, each as a share of the busy samples (idle frames left out, see IDLE_FRAMES)."""
    roots = read_flamegraph(path)
    for root in roots:
        _busy(root, IDLE_FRAMES + leave_out)
    everything = sum(r.samples for r in roots)
    total = sum(r.busy for r in roots)
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    packages: dict[str, int] = defaultdict(int)
    processes: list[tuple[str, int]] = []

    def walk(frame: Frame, above: frozenset[str]) -> None:
        alone = frame.busy - sum(c.busy for c in frame.children)
        own[frame.name] += alone
        packages[_package(frame.name)] += alone
        if frame.name not in above:  # a recursive call counts once
            inclusive[frame.name] += frame.busy
        for child in frame.children:
            walk(child, above | {frame.name})

    def walk_process(process: Frame, role: str) -> None:
        stacks = [c for c in process.children if not c.name.startswith("process ")]
        # Samples with the process frame alone: py-spy found no frame to unwind. Under
        # gevent that is mostly the hub's event loop in C (libev, epoll): recorded without
        # --native, the same time shows as Hub.run's own.
        bare = process.busy - sum(c.busy for c in process.children)
        own["(no stack: mostly the gevent hub's C event loop)"] += bare
        packages["(no stack)"] += bare
        busy = sum(c.busy for c in stacks) + bare
        name = f"{role} {process.name.split(':', 1)[0]}"
        processes.append((f"{name} ({bare / total:.1%} with no stack)", busy))
        for child in stacks:
            walk(child, frozenset())
        for child in process.children:
            if child.name.startswith("process "):
                walk_process(child, "worker")

    for root in roots:
        walk_process(root, "master")

    def table(title: str, counts: dict[str, int], rows: int) -> list[str]:
        lines = [f"{title}:"]
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        for name, samples in [kv for kv in ranked if kv[1] > 0][:rows]:
            lines.append(f"  {samples / total:6.1%}  {samples:6,}  {name}")
        return lines

    lines = [
        f"{path}: {total:,} busy samples ({everything - total:,} more in idle frames left "
        "out; py-spy samples only threads it sees running)"
    ]
    if leave_out:
        lines.append(f"  also left out: frames starting with {', '.join(leave_out)}")
    lines += [f"  {name}: {samples / total:.1%}" for name, samples in processes]
    lines += table("self time by package", packages, 12)
    lines += table("self time by function", own, top)
    named = {k: v for k, v in inclusive.items() if not _plumbing(k)}
    lines += table("total time by function (itself and what it calls)", named, top * 2)
    return "\n".join(lines)


def profile(args: argparse.Namespace) -> list[Path]:
    binary = py_spy()
    ensure_system_packages()
    args.out.mkdir(parents=True, exist_ok=True)
    headers = {"Cookie": f"{_COOKIE_NAME}={session_cookie()}"}
    written = []
    with tempfile.TemporaryDirectory(prefix="wechat-gateway-profile-") as tmp:
        workdir = Path(tmp)
        upstream_port, gateway_port = free_ports(2)
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                Service(
                    "upstream",
                    gunicorn_argv("apps:upstream", upstream_port),
                    upstream_port,
                    workdir,
                )
            )
            # The slow upstream is not started: /slow is never requested here.
            settings = gateway_variant(gateway_port, upstream_port, upstream_port)
            gateway = start_gateway(stack, "gateway", settings, workdir)
            status, body = clients.get(gateway.port, "/hello", headers)
            if status != 200 or body != HELLO:
                raise RuntimeError(f"the gateway answered /hello with {status}, {len(body)} bytes")
            assert gateway.process is not None
            master = gateway.process.pid
            url = f"http://127.0.0.1:{gateway.port}/hello"
            clients.wrk(url, args.connections, 2, clients.write_wrk_script(workdir), headers)
            for case in args.cases:
                if case == "get":
                    output = args.out / f"get-{args.connections}.svg"
                    load = wrk_load(
                        gateway.port, args.connections, args.seconds + 6, headers, workdir
                    )
                else:
                    output = args.out / "upload.svg"
                    load = upload_load(gateway.port, args.upload_mib * MIB, headers)
                output.unlink(missing_ok=True)
                outcome: dict[str, object] = {}

                def start(output: Path = output, outcome: dict[str, object] = outcome) -> None:
                    pids = gateway.pids()
                    before, started = cpu_split(pids), time.monotonic()
                    outcome["native"], outcome["log"] = record(
                        binary, master, output, args.seconds, args.rate, not args.no_native
                    )
                    after, wall = cpu_split(pids), time.monotonic() - started
                    user, system = after[0] - before[0], after[1] - before[1]
                    outcome["cpu"] = (
                        f"the gateway's processes used {user:.1f} s user and {system:.1f} s "
                        f"system CPU time in {wall:.1f} s ({system / max(user + system, 1e-9):.0%} "
                        "in the kernel)"
                    )

                print(f"profile: recording {output} for {args.seconds:g} s", flush=True)
                summary = under_load(load, start)
                print(f"profile: {case}: {summary}; native frames: {outcome['native']}")
                print(f"profile: {case}: {outcome['cpu']}")
                print(summarize(output, args.top), flush=True)
                written.append(output)
            if gateway.process.poll() is not None or len(gateway.pids()) < 3:
                raise RuntimeError(f"the gateway lost a process:\n{gateway.log_tail()}")
            for problem in gateway.problems():
                print(f"profile: the gateway logged: {problem}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="seconds py-spy records")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (GET)")
    parser.add_argument("--upload-mib", type=int, default=256, help="size of each upload")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="what to profile"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "profiles")
    parser.add_argument(
        "--no-native", action="store_true", help="Python frames only (no C, no system calls)"
    )
    parser.add_argument("--top", type=int, default=20, help="frames listed per summary table")
    parser.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        metavar="SVG",
        help="print the top frames of saved flame graphs, profile nothing",
    )
    parser.add_argument(
        "--leave-out",
        nargs="+",
        default=[],
        metavar="FRAME",
        help="with --summarize: also leave out frames whose name starts so (and what they "
        "call), e.g. 'send (libc' 'recv (libc' for the time outside system calls",
    )
    args = parser.parse_args()
    if args.summarize:
        for path in args.summarize:
            print(summarize(path, args.top, tuple(args.leave_out)))
        return
    for path in profile(args):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
