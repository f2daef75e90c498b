"""Real Redis processes for end-to-end tests, each with its data in a temporary directory.

- ``RedisServer``: ``redis-server`` on a free loopback port (and, if asked, a unix socket),
  persistence on (an append-only file, fsynced at every write), optionally a password
  (``requirepass``), a replica of another (``replica_of``) or a cluster node; stopped,
  killed and started again at will, on the same port and data.
- ``RedisSentinel``: ``redis-server --sentinel`` watching one master.
- ``RedisClusterNodes``: three master nodes made into one Redis Cluster.

``make test`` installs Debian's redis-server when it is missing.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.helpers.support import free_port, stop_process


def _binary() -> str:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed: run `make test`, which installs it")
    return binary


def _wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Call ``check`` until it answers true without a Redis error, or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        unix_socket: bool = False,
        replica_of: RedisServer | None = None,
        cluster: bool = False,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.socket = self.directory / "redis.sock" if unix_socket else None
        self.replica_of = replica_of
        self.cluster = cluster
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start (again) on the same port and data; return once it answers PING."""
        command = [
            _binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "no",
            "--repl-diskless-sync-delay",  # a replica syncs at once, not 5 s later
            "0",
        ]
        if self.password:
            command += ["--requirepass", self.password, "--masterauth", self.password]
        if self.socket is not None:
            command += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            command += ["--cluster-config-file", str(self.directory / "nodes.conf")]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        with self.client() as client:
            _wait_until(client.ping, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGTERM, again every 0.1 s: a replica writing its first append-only file after a
        sync refuses to exit until it is done."""
        process = self.process
        deadline = time.monotonic() + 10
        while process is not None and process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
        stop_process(process, signal.SIGKILL, timeout=10)

    def kill(self) -> None:
        """Stop at once, as a crash would (every write is already on disk)."""
        stop_process(self.process, signal.SIGKILL, timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )

    def wait_for_sync(self) -> None:
        """Wait until this replica has caught up with its master's current data."""
        assert self.replica_of is not None
        with self.replica_of.client() as master, self.client() as replica:
            offset = int(master.info("replication")["master_repl_offset"])

            def synced() -> bool:
                info = replica.info("replication")
                return bool(
                    info.get("master_link_status") == "up"
                    and int(info.get("slave_repl_offset", -1)) >= offset
                )

            _wait_until(synced, f"replica on port {self.port} in sync")

    def dump(self) -> bytes:
        """Every key's and value's bytes, for looking for secrets in the store."""
        client = self.client()
        out = []
        for key in client.scan_iter():
            kind = client.type(key)
            out.append(key)
            if kind == b"string":
                out.append(client.get(key) or b"")
            elif kind == b"set":
                out.extend(client.smembers(key))
            elif kind == b"zset":
                out.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    out.extend([*fields.keys(), *fields.values()])
        client.close()
        return b"\n".join(out)


class RedisSentinel:
    """One Sentinel watching ``master`` under the name ``name``, with a quorum of one,
    told of ``replicas`` up front (else it learns of them from the master's INFO, seconds
    later)."""

    def __init__(
        self,
        directory: Path,
        master: RedisServer,
        *,
        replicas: tuple[RedisServer, ...] = (),
        name: str = "mymaster",
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.master = master
        self.replicas = replicas
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisSentinel:
        config = self.directory / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {self.name} 1000",
            f"sentinel failover-timeout {self.name} 5000",
        ]
        lines += [f"sentinel known-replica {self.name} 127.0.0.1 {r.port}" for r in self.replicas]
        if self.master.password:
            lines.append(f"sentinel auth-pass {self.name} {self.master.password}")
        config.write_text("\n".join(lines) + "\n")
        log = (self.directory / "sentinel.log").open("ab")
        self.process = subprocess.Popen(
            [_binary(), str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        with self.client() as client:
            _wait_until(client.ping, f"sentinel on port {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process, signal.SIGTERM, timeout=10)

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def master_port(self) -> int:
        with self.client() as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(port)

    def wait_for_replicas(self, count: int) -> None:
        """Wait until the sentinel knows ``count`` healthy replicas (it learns of them from
        the master's INFO), so that a failover has somewhere to go."""

        def known() -> bool:
            with self.client() as client:
                replicas = client.sentinel_slaves(self.name)
            healthy = [r for r in replicas if not r["is_sdown"] and not r["is_disconnected"]]
            return len(healthy) >= count

        _wait_until(known, f"sentinel knowing {count} replicas")

    def failover(self) -> int:
        """Promote a replica now; the port of the new master once the sentinel names it."""
        before = self.master_port()
        with self.client() as client:
            client.sentinel_failover(self.name)
        _wait_until(lambda: self.master_port() != before, "failover")
        return self.master_port()


class RedisClusterNodes:
    """Three masters, every slot covered: the smallest real Redis Cluster."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(3)]

    def __enter__(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for node in self.nodes:
            with node.client() as client:
                _wait_until(
                    lambda c=client: c.cluster("INFO")["cluster_state"] == "ok",
                    f"cluster node {node.port} ok",
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.stop()

    @property
    def url(self) -> str:
        return self.nodes[0].url
