"""Running the gateway on gunicorn, embedded in-process.

``wechat-gateway serve`` builds a gunicorn ``BaseApplication`` from the validated settings
instead of shelling out, so the one YAML file configures everything and nothing reads
``sys.argv`` behind the CLI's back.

Worker model. A sign-in gateway spends its time waiting on sockets: on the upstream, on
WeChat, on slow clients, on long streams (server-sent events, big downloads). The default
is gunicorn's ``gevent`` worker (as ``gateway.server.worker.GatewayWorker``, which does less per
request): every request is a greenlet, so 120 requests parked on a slow upstream cost 120
small greenlets, not 120 threads, and a fast request is never queued behind them.
``gthread`` is available (``server.worker_class: gthread``) where gevent cannot be used; its
concurrency is ``workers x threads``, so size ``server.threads`` for the number of slow
requests you expect in flight. ``docs/architecture.md`` has the measurements.

The app is built after fork, in each worker (no preload), so every worker has its own
upstream connection pools and HTTP clients.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

from gateway import __version__
from gateway.config import ConfigError
from gateway.server.greenlets import gevent_timeout
from gateway.server.logs import configure_logging, style_handler
from gateway.server.metrics import Metrics

if TYPE_CHECKING:
    from gateway.config import Settings

# The worker class gunicorn runs for each server.worker_class (others run as named).
_WORKERS = {"gevent": "gateway.server.worker.GatewayWorker"}
# Seconds past server.graceful_timeout before gunicorn kills a stopping worker.
_CLOSING_ROOM = 5
# Query parameters that must never reach a log line: OAuth codes and states, tokens, secrets.
_SENSITIVE_PARAMS = ("code", "state", "token", "secret", "password", "ticket", "key", "sig")


def redact_target(target: str) -> str:
    """The request target with the values of sensitive query parameters replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    lowered = query.lower()
    if not any(word in lowered for word in _SENSITIVE_PARAMS):
        return target
    pairs = [
        (name, "[redacted]" if any(word in name.lower() for word in _SENSITIVE_PARAMS) else value)
        for name, value in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{path}?{urlencode(pairs, safe='[]')}"


class AccessLogger(Logger):  # type: ignore[misc]
    """Access lines, with sensitive query values redacted, cheaply built: the combined
    format plus the duration and the request id, or (``server.log_format: json``) one JSON
    object with the same facts as fields. gunicorn's own lines take the configured format.

    One line per request is a measurable share of a proxy's time when it goes through
    ``logging`` (a record, a lock, a formatter, a clock call each), so a line for a plain
    stream handler is written straight to its stream, with the date formatted once a second.
    """

    #: ``server.log_format``, set before gunicorn starts (workers inherit it).
    log_format = "text"

    _stamp_second = -1
    _stamp = ""
    _enabled = False
    #: Whether writes take the handler's lock: not for greenlets, which cannot switch
    #: inside a write to a plain stream (decided at the first line, in the worker).
    _locking: bool | None = None

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._enabled = bool(cfg.accesslog)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                style_handler(handler, self.log_format, keep_text=True)

    def _date(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
            self._stamp_second = now
        return self._stamp

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self._enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        millis = request_time.seconds * 1000 + request_time.microseconds // 1000
        rid = environ.get("gateway.request_id") or "-"
        if self.log_format == "json":
            line = self._json_line(environ, status, sent, millis, rid)
        else:
            line = '%s - - [%s] "%s %s %s" %s %s "%s" "%s" %dms %s' % (  # noqa: UP031 - hot path
                environ.get("REMOTE_ADDR", "-"),
                self._date(),
                environ.get("REQUEST_METHOD", "-"),
                redact_target(environ.get("RAW_URI", "-")),
                environ.get("SERVER_PROTOCOL", "-"),
                status,
                sent if sent is not None else "-",
                redact_target(environ.get("HTTP_REFERER", "-")),
                environ.get("HTTP_USER_AGENT", "-"),
                millis,
                rid,
            )
        handlers = self.access_log.handlers
        if len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler:
            handler = handlers[0]
            if self._locking is None:
                self._locking = gevent_timeout() is None
            if not self._locking:
                handler.stream.write(line + "\n")
                handler.stream.flush()
                return
            handler.acquire()
            try:
                handler.stream.write(line + "\n")
                handler.stream.flush()
            finally:
                handler.release()
        else:
            self.access_log.info(line)

    _iso_second = -1
    _iso = ""
    _pid = 0

    def _json_line(
        self, environ: dict[str, Any], status: str, sent: int | None, millis: int, rid: str
    ) -> str:
        """The same object ``JsonFormatter`` writes (time, level, logger, pid, message,
        request_id, then the fields), built directly: a ``LogRecord`` and a formatter per
        request cost more than the line itself."""
        now = time.time()
        second = int(now)
        if second != self._iso_second:
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._iso_second = second
            self._pid = os.getpid()
        method = environ.get("REQUEST_METHOD", "-")
        target = redact_target(environ.get("RAW_URI", "-"))
        document: dict[str, Any] = {
            "time": f"{self._iso}.{int(now % 1 * 1000):03d}Z",
            "level": "info",
            "logger": "access",
            "pid": self._pid,
            "message": f"{method} {target} {status}",
        }
        if rid != "-":
            document["request_id"] = rid
        document["remote"] = environ.get("REMOTE_ADDR", "-")
        document["method"] = method
        document["target"] = target
        document["protocol"] = environ.get("SERVER_PROTOCOL", "-")
        document["status"] = int(status) if status.isdigit() else status
        document["bytes"] = sent
        document["referer"] = redact_target(environ.get("HTTP_REFERER", ""))
        document["user_agent"] = environ.get("HTTP_USER_AGENT", "")
        document["duration_ms"] = millis
        return json.dumps(document, ensure_ascii=False)


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured from the gateway's settings and serving ``Gateway``.

    ``reread`` reads and validates the configuration file again, for SIGHUP (see
    ``GatewayArbiter``); without it (the demo) there is nothing to reload.
    """

    def __init__(self, settings: Settings, reread: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self.reread = reread
        AccessLogger.log_format = settings.server.log_format
        # Room for replacement workers and `TTIN` scaling; shared by all of them.
        self.metrics = Metrics(
            slots=max(16, 4 * settings.server.workers),
            threaded=settings.server.worker_class == "gthread",
        )
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        server = self.settings.server
        return {
            "bind": [server.bind],
            "workers": server.workers,
            "worker_class": _WORKERS.get(server.worker_class, server.worker_class),
            "threads": server.threads,
            "worker_connections": server.worker_connections,
            "keepalive": math.ceil(server.keepalive),
            # The worker closes open WebSockets (1001) at server.graceful_timeout itself;
            # gunicorn's own deadline (then SIGKILL) leaves room for their close handshakes.
            "graceful_timeout": math.ceil(server.graceful_timeout) + _CLOSING_ROOM,
            "timeout": 30,
            "limit_request_line": server.limit_request_line,
            "limit_request_fields": server.limit_request_fields,
            "limit_request_field_size": server.limit_request_field_size,
            "accesslog": "-" if server.access_log else None,
            "errorlog": "-",
            "loglevel": server.log_level,
            "logger_class": AccessLogger,
            "proc_name": "wechat-gateway",
            "control_socket_disable": True,
            # The gateway decides what a client may claim about itself; gunicorn must not
            # turn X-Forwarded-* into wsgi.url_scheme or accept underscore header names.
            "forwarded_allow_ips": "",
            "secure_scheme_headers": {},
            "header_map": "drop",
            "worker_exit": _close_gateway,
            "when_ready": self._started,
            "pre_fork": self._assign_metrics_slot,
            "post_fork": self._use_metrics_slot,
            "child_exit": self._release_metrics_slot,
        }

    def _started(self, arbiter: Any) -> None:
        """The one start line, from the master, once it listens."""
        logging.getLogger("gateway").info("%s", describe(self.settings))

    def reload_settings(self) -> Settings | None:
        """SIGHUP, in the master: the file validated first. Problems: each logged, and the
        running configuration stays. Valid: the new settings (what only a restart can change
        kept as it is, with a warning), for the workers to take up."""
        log = logging.getLogger("gateway")
        if self.reread is None:
            log.warning("reload: this gateway was not started from a configuration file")
            return None
        try:
            settings = self.reread()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error(
                "reload refused: %d problem(s); still running on the previous configuration",
                len(exc.problems),
            )
            return None
        settings = keep_restart_only(self.settings, settings, log)
        self.settings = settings
        AccessLogger.log_format = settings.server.log_format
        configure_logging(settings.server.log_level, settings.server.log_format)
        log.info("reload: configuration valid; %s", describe(settings))
        return settings

    def _assign_metrics_slot(self, server: Any, worker: Any) -> None:
        worker.metrics_slot = self.metrics.assign_slot()

    def _use_metrics_slot(self, server: Any, worker: Any) -> None:
        self.metrics.use_slot(worker.metrics_slot)

    def _release_metrics_slot(self, server: Any, worker: Any) -> None:
        self.metrics.release_slot(worker.metrics_slot)

    def load_config(self) -> None:
        for key, value in self.gunicorn_options().items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from gateway.builder import build_gateway  # noqa: PLC0415 - built after fork, in the worker

        configure_logging(self.settings.server.log_level, self.settings.server.log_format)
        return build_gateway(self.settings, metrics=self.metrics)


def _close_gateway(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    close = getattr(app, "close", None)
    if callable(close):
        close()


#: File descriptors a worker needs besides two per connection (a WebSocket or a proxied
#: request holds the client's and the upstream's): listeners, logs, the state store, pools.
_SPARE_FILES = 256


def raise_open_files_limit(worker_connections: int) -> str | None:
    """Raise this process's soft limit on open files (inherited by the workers) to what
    ``worker_connections`` needs, within the hard limit. A warning when that is too low."""
    needed = 2 * worker_connections + _SPARE_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    unlimited = hard == resource.RLIM_INFINITY
    target = needed if unlimited else min(hard, max(soft, needed))
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"open files limit is {soft} (hard limit {hard}), below the {needed} that"
            f" server.worker_connections: {worker_connections} needs (two per connection);"
            " raise the hard limit (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=)"
            " or lower worker_connections"
        )
    return None


#: ``server`` settings a running gunicorn cannot change: they need a restart.
_RESTART_ONLY = ("bind", "workers", "worker_class", "threads", "worker_connections")


def keep_restart_only(old: Settings, new: Settings, log: logging.Logger) -> Settings:
    """``new``, with the settings only a restart can change kept as in ``old``."""
    changed = [key for key in _RESTART_ONLY if getattr(old.server, key) != getattr(new.server, key)]
    if not changed:
        return new
    for key in changed:
        log.warning("reload: server.%s changed; it takes effect at the next restart", key)
    kept = {key: getattr(old.server, key) for key in _RESTART_ONLY}
    return replace(new, server=replace(new.server, **kept))


def describe(settings: Settings) -> str:
    """What this gateway is, for the start line: no secret in it."""
    upstreams = ", ".join(f"{(u.host or '') + u.prefix} -> {u.url}" for u in settings.upstreams)
    state = settings.state
    store = state.url
    if state.sentinel is not None:
        store += f" (sentinel {state.sentinel.master} at {', '.join(state.sentinel.hosts)})"
    elif state.cluster:
        store += " (cluster)"
    server = settings.server
    return (
        f"wechat-gateway {__version__} serving {settings.public_url} on {server.bind}"
        f" ({server.workers} {server.worker_class} workers); upstreams: {upstreams};"
        f" state: {store}"
    )


class GatewayArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, but SIGHUP reloads the configuration in place: validated first,
    then every worker builds the gateway anew for new requests while the requests and
    WebSockets in flight finish on the old one (gunicorn's own HUP would replace the
    workers, cutting open WebSockets after the grace time)."""

    def handle_hup(self) -> None:
        if self.app.reload_settings() is None:
            return
        for pid in list(self.WORKERS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


def check_port_free(bind: str) -> str | None:
    """Why ``bind`` cannot be listened on (in use, not allowed), or None. A TCP address is
    tried once, so that a port in use is one clear line instead of gunicorn's retries."""
    if bind.startswith(("unix:", "fd://")):
        return None
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"cannot listen on {bind}: the address is already in use"
        return f"cannot listen on {bind}: {exc.strerror or exc}"
    finally:
        probe.close()
    return None


def serve(settings: Settings, reread: Callable[[], Settings] | None = None) -> int:
    """Run until stopped: SIGTERM stops gracefully within server.graceful_timeout (SIGINT,
    SIGQUIT at once); SIGHUP reloads the configuration through ``reread``. 1 when it cannot
    listen."""
    configure_logging(settings.server.log_level, settings.server.log_format)
    log = logging.getLogger("gateway")
    busy = check_port_free(settings.server.bind)
    if busy is not None:
        log.error("%s", busy)
        return 1
    problem = raise_open_files_limit(settings.server.worker_connections)
    if problem is not None:
        log.warning("%s", problem)
    server = GatewayServer(settings, reread)
    try:
        GatewayArbiter(server).run()
    except RuntimeError as exc:  # as gunicorn's own BaseApplication.run
        log.error("%s", exc)
        return 1
    return 0
