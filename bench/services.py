"""The benchmark's processes: start, wait until they answer, watch their memory, stop.

Every process is started in its own session, so stopping one signals exactly the process
group this harness created (the gunicorn master and its workers, or nginx's master and
workers) and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (all held at once while they are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _listener_inode(port: int) -> int | None:
    """The inode of the socket listening on 127.0.0.1:``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and address == f"0100007F:{port:04X}":
            return int(inode)
    return None


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def ensure_system_packages() -> None:
    """Install wrk, nginx and redis-server with apt-get when they are missing and we are
    root."""
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if nginx_binary() is None:
        # nginx-light is Debian's smallest nginx up to bookworm; later releases have only nginx.
        has_light = subprocess.run(
            ["apt-cache", "show", "nginx-light"], capture_output=True, check=False
        )
        missing.append("nginx-light" if has_light.returncode == 0 else "nginx")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"bench: please install {' '.join(missing)}")
    print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def gunicorn_argv(
    app: str, port: int, *, workers: int = 2, worker_class: str = "gevent"
) -> list[str]:
    """gunicorn with the gateway's default server settings: gevent, 2 workers, 1000 conns."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        worker_class,
        "--workers",
        str(workers),
        "--worker-connections",
        "1000",
        "--keep-alive",
        "5",
        "--timeout",
        "30",
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        "--log-level",
        "warning",
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(BENCH),
        app,
    ]


def nginx_config(prefix: Path, port: int, fast_port: int, slow_port: int) -> str:
    """``proxy_pass`` with upstream keepalive; 2 workers; streaming both ways, no disk."""
    user = ""
    if os.geteuid() == 0:
        # A root master would drop its workers to nobody, who cannot use the temp prefix.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}
worker_processes 2;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  keepalive_requests 1000000;
  upstream fast {{ server 127.0.0.1:{fast_port}; keepalive 64; keepalive_requests 1000000; }}
  upstream slow {{ server 127.0.0.1:{slow_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    proxy_max_temp_file_size 0;
    location /slow/ {{ proxy_pass http://slow; }}
    location / {{ proxy_pass http://fast; }}
  }}
}}
"""


class Service:
    """One server process (and its children) on a loopback port; a context manager."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        ready_path: str = "/hello",
        discard_stdout: bool = False,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.discard_stdout = discard_stdout
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=subprocess.DEVNULL if self.discard_stdout else log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if self._answers():
                if not self._listens():
                    raise RuntimeError(f"port {self.port} is taken by another process")
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer on port {self.port}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        request = f"GET {self.ready_path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(request.encode())
                return sock.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def _listens(self) -> bool:
        """Whether the socket listening on the port is this service's own."""
        inode = _listener_inode(self.port)
        target = f"socket:[{inode}]"
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                            return True
        return False

    def pids(self) -> list[int]:
        """The process and all its descendants (gunicorn or nginx master plus workers)."""
        if self.process is None or self.process.poll() is not None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def problems(self) -> list[str]:
        """Warning and error lines from the log (gunicorn, the gateway, or nginx, as text;
        the gateway's and gunicorn's with ``server.log_format: json``, as JSON)."""
        marks = ("[WARNING]", "[ERROR]", "[CRITICAL]", "Traceback", "[warn]", "[error]", "[crit]")
        return [
            line
            for line in self.log_lines()
            if any(mark in line for mark in marks) or _json_level(line) in _JSON_PROBLEMS
        ]

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


_JSON_PROBLEMS = {"warning", "error", "critical"}


def _json_level(line: str) -> str | None:
    """The ``level`` of a JSON log line (``server.log_format: json``); None for others."""
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    level = document.get("level") if isinstance(document, dict) else None
    return level.lower() if isinstance(level, str) else None


def rss_bytes(pids: list[int]) -> int:
    """The summed VmRSS of ``pids`` (pages shared after fork are counted once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes ``pids`` have used so far."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICK


class PeakRss:
    """Samples the summed RSS of a process tree every ``interval`` seconds while open."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = rss_bytes(self.pids)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pids))

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.pids))
