"""nginx in the foreground for end-to-end tests: a minimal ``nginx.conf`` keeping every path
nginx writes in a temporary directory, around a site file the test renders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.support import stop_process, wait_for_port

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_MAIN_CONF = """\
{user}worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (path for path in NGINX_CANDIDATES if os.access(path, os.X_OK)), None
    )
    if found is None:
        pytest.fail("nginx is not installed: run `make test`, which installs it (nginx-light)")
    return found


class Nginx:
    """nginx in the foreground with a rendered config in ``directory``."""

    def __init__(self, directory: Path, site: str, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        (directory / "site.conf").write_text(site, encoding="utf-8")
        user = "user root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            _MAIN_CONF.format(user=user, tmp=directory), encoding="utf-8"
        )
        self.log_path = directory / "nginx.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        binary = nginx_binary()
        directive = f"daemon off; pid {self.directory}/nginx.pid; error_log stderr info;"
        command = [binary, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")]
        check = subprocess.run(
            [*command, "-e", "stderr", "-t", "-g", directive],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, f"nginx rejects the shipped config:\n{check.stderr}"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, "-e", "stderr", "-g", directive], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port, timeout=10)
        except TimeoutError:
            self.__exit__()
            raise AssertionError(f"nginx did not start:\n{self.log()}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process, signal.SIGQUIT, timeout=10)
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
