"""gunicorn's gevent worker, with less work per request: the default for ``serve``.

A proxy's own work per request is small, so what the server around it does per request
shows in its throughput. gunicorn's request parser, environ, keep-alive loop, hooks, framing
and error handling are used as they are; four things cost less:

- the response head and the first body piece leave in one ``send`` (gunicorn writes them
  separately: two system calls, and two wake-ups of the client for every small answer);
- the ``Date`` header is formatted once a second, not with ``email.utils`` per response;
- each gunicorn setting is looked up once per worker, not validated on every access, and
  the constant part of the environ (with its ``wsgi.errors`` stream) is built once;
- with ``forwarded_allow_ips`` empty (as the gateway sets it), no peer address is parsed
  per request to learn that no TCP peer may set forwarding headers.

And one thing gunicorn does not do: an app's own ``Server`` and ``Date`` fields (the
upstream's, for a proxied answer) are kept instead of being replaced by gunicorn's.

It needs gunicorn 26.2 or later (``wsgi.create`` takes the response class from there on).

``server.worker_class: gthread`` runs gunicorn's own threaded worker unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import time
from datetime import datetime
from email.utils import formatdate
from typing import Any

import gevent
from gunicorn.http import message, wsgi
from gunicorn.workers.ggevent import GeventWorker

from gateway.config import ConfigError
from gateway.http.sockets import send_all
from gateway.proxy.forward import START_PROXIED
from gateway.proxy.tunnel import TAKEOVER_KEY, TakenOver
from gateway.server.logs import configure_logging, request_id
from gateway.server.serve import AccessLogger, keep_restart_only


class _Clock:
    """The ``Date`` header value, formatted again only when the second changes."""

    second = -1
    value = ""

    def now(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.value = formatdate(now, usegmt=True)
            self.second = now
        return self.value


_clock = _Clock()
_SERVER_FIELDS = frozenset({"server", "date"})


class GatewayResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response writer; the head goes out with the first body piece."""

    headers_sent: bool
    sent: int
    status: str | None
    #: ``Server`` and ``Date`` from the app, which gunicorn would drop for its own: a proxied
    #: answer keeps the upstream's.
    _app_fields: frozenset[str] = frozenset()

    def process_headers(self, headers: list[tuple[str, str]]) -> None:
        own = [(name, value) for name, value in headers if name.lower() in _SERVER_FIELDS]
        super().process_headers(headers)  # validates every field; drops those two
        if own:
            self.headers.extend((name, value.strip(" \t")) for name, value in own)
            self._app_fields = frozenset(name.lower() for name, _ in own)

    def start_proxied(
        self,
        status: str,
        code: int,
        headers: list[tuple[str, str]],
        length: int | None,
        app_fields: frozenset[str],
    ) -> None:
        """``start_response`` for an answer the forwarder built from an upstream head its
        own reader parsed: every name a token, every value free of control characters and
        trimmed, no hop-by-hop field (gunicorn's list included), the status line valid,
        ``length`` the value of the ``Content-Length`` field the list holds, ``app_fields``
        the upstream's ``Server`` and ``Date`` among them (lower-cased), placed last.
        gunicorn's ``start_response`` would check all of that again, field by field; the
        outcome is the same."""
        if self.status is not None:
            raise AssertionError("Response headers already set!")
        self.status = status
        self.status_code = code
        omits = self._response_omits_body(self.req.method, code)
        if omits and length is not None and self._response_forbids_content_length(code):
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            length = None
        self.headers = headers
        self.response_length = length
        if app_fields:
            self._app_fields = app_fields
        self._omits_body = omits
        self.chunked = self.is_chunked()

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.req.version
        if self._app_fields:
            server = "" if "server" in self._app_fields else f"Server: {self.version}\r\n"
            date = "" if "date" in self._app_fields else f"Date: {_clock.now()}\r\n"
        else:
            server, date = f"Server: {self.version}\r\n", f"Date: {_clock.now()}\r\n"
        headers = [
            f"HTTP/{version[0]}.{version[1]} {self.status}\r\n{server}{date}"
            f"Connection: {connection}\r\n"
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def _head(self) -> bytes:
        lines = self.default_headers()
        lines.extend([f"{name}: {value}\r\n" for name, value in self.headers])
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def write(self, arg: bytes) -> None:
        if self.headers_sent or self.chunked or self._omits_body or type(arg) is not bytes:
            super().write(arg)
            return
        # A known length (or none, until close): the bytes go out as they are.
        tosend = len(arg)
        if self.response_length is not None:
            tosend = max(0, min(self.response_length - self.sent, tosend))
            if tosend < len(arg):
                arg = arg[:tosend]
        send_all(self.sock, self._head() + arg if arg else self._head())
        self.headers_sent = True
        self.sent += tosend


class _SettledConfig:
    """A worker's gunicorn settings, each looked up once.

    gunicorn's ``Config`` finds and validates a setting on every attribute access, a dozen
    times per request; in a running worker nothing changes them, so the first answer is
    kept as a plain attribute.
    """

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cfg, name)
        self.__dict__[name] = value
        return value


def _settle_base_environ(cfg: Any) -> None:
    """gunicorn builds every request's environ from ``base_environ(cfg)``: a handful of
    constants, plus a ``wsgi.errors`` stream wrapper that looks its logger up each time.
    In a worker none of it changes, so it is built once and copied."""
    base: dict[str, Any] = wsgi.base_environ(cfg)

    def base_environ(_: Any) -> dict[str, Any]:
        return base.copy()

    wsgi.base_environ = base_environ


def _settle_forwarding_trust(cfg: Any) -> None:
    """gunicorn asks on every request whether the peer may set forwarding headers: it
    parses the peer's address and looks it up in ``forwarded_allow_ips``. The gateway sets
    that list empty (it judges forwarding headers itself, ``access.trusted_proxies``), and
    with an empty list gunicorn's answer is no for every TCP peer and yes for a Unix socket,
    which is what this says without the parse."""
    if cfg.forwarded_allow_ips:
        return

    def peer_is_trusted_proxy(request: Any) -> bool:
        return not isinstance(request.peer_addr, tuple)

    message.HeaderPolicy._peer_is_trusted_proxy = peer_is_trusted_proxy


class GatewayWorker(GeventWorker):  # type: ignore[misc]
    """The default worker: gunicorn's ``gevent`` worker with ``GatewayResponse``."""

    cfg: Any
    alive: bool

    #: The app: the gateway serving new requests.
    wsgi: Any
    #: Gateways replaced by a reload, still serving what was in flight.
    _retired: list[Any]

    def init_process(self) -> None:
        self._retired = []
        # After fork, in the worker: the settings are final here.
        self.cfg = _SettledConfig(self.cfg)
        _settle_base_environ(self.cfg)
        _settle_forwarding_trust(self.cfg)
        super().init_process()

    def run(self) -> None:
        # An error escaping a greenlet is logged (in the configured format), not printed
        # by gevent's hub as a bare traceback.
        log = logging.getLogger("gateway")

        def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
            log.error("unexpected error in %s", context, exc_info=(kind, value, tb))

        gevent.get_hub().print_exception = print_exception
        super().run()

    def init_signals(self) -> None:
        super().init_signals()
        # gunicorn's workers leave SIGHUP at its default (the end of the process); here it
        # reloads the configuration in place (``gateway.server.serve.GatewayArbiter``).
        signal.signal(signal.SIGHUP, self.handle_hup)
        signal.siginterrupt(signal.SIGHUP, False)

    def handle_hup(self, sig: Any, frame: Any) -> None:
        gevent.spawn(self.reload)

    def reload(self) -> None:
        """Build the gateway anew from the (already validated) file: new requests use it at
        once; requests and WebSockets in flight finish on the old one, which is closed once
        its last tunnel has ended and a grace time has passed."""
        from gateway.builder import build_gateway  # noqa: PLC0415 - as the app's own load

        app = self.app
        log = logging.getLogger("gateway")
        reread = getattr(app, "reread", None)
        if reread is None:
            return
        try:
            settings = keep_restart_only(app.settings, reread(), log)
            fresh = build_gateway(settings, metrics=app.metrics)
        except ConfigError as exc:
            log.error("reload refused by this worker: %s", "; ".join(exc.problems))
            return
        except Exception:
            log.exception("reload: building the new gateway failed; keeping the previous one")
            return
        AccessLogger.log_format = settings.server.log_format
        configure_logging(settings.server.log_level, settings.server.log_format)
        old, self.wsgi = self.wsgi, fresh
        app.settings = settings
        self._retired.append(old)
        gevent.spawn(self._retire, old, settings.server.graceful_timeout)
        log.info("reload: new requests use the new configuration")

    def _retire(self, old: Any, grace: float) -> None:
        tunnels = old.websocket.tunnels
        while tunnels.open:
            gevent.sleep(1.0)
        gevent.sleep(grace)  # the last ordinary requests on it
        with contextlib.suppress(Exception):
            old.close()
        with contextlib.suppress(ValueError):
            self._retired.remove(old)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """gunicorn's connection loop, counted in ``open_connections`` while it lasts."""
        metrics = getattr(self.app, "metrics", None)
        if metrics is None:
            super().handle(listener, client, addr)
            return
        metrics.add("open_connections", 1)
        try:
            super().handle(listener, client, addr)
        finally:
            metrics.add("open_connections", -1)

    def handle_exit(self, sig: Any, frame: Any) -> None:
        """SIGTERM: stop accepting; open WebSockets get ``server.graceful_timeout``."""
        super().handle_exit(sig, frame)
        # The app exists once the worker has loaded it (a SIGTERM may come before).
        for app in (getattr(self, "wsgi", None), *self._retired):
            stopping = getattr(app, "stopping", None)
            if callable(stopping):
                stopping()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool | None:
        """gunicorn's ``AsyncWorker.handle_request`` (27.0), with ``GatewayResponse``."""
        request_start = datetime.now()
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(
                req, sock, addr, listener_name, self.cfg, response_class=GatewayResponse
            )
            environ["wsgi.multithread"] = True
            # The connection may become a WebSocket tunnel: the app takes it over with
            # whatever the client sent after its handshake (``gateway.proxy.tunnel``).
            environ[TAKEOVER_KEY] = req.unreader
            environ[START_PROXIED] = resp.start_proxied
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if type(respiter) is TakenOver:
                # A tunnel, over: nothing more to write, and the connection is done.
                resp.status, resp.sent = respiter.status, respiter.sent
                self.log.access(resp, req, environ, datetime.now() - request_start)
                raise StopIteration()
            if self.is_already_handled(respiter):
                return False
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                raise StopIteration()
        except (StopIteration, OSError):
            raise  # the connection ends; gunicorn's keep-alive loop handles both
        except (Exception, SystemExit) as exc:
            if resp is not None and resp.headers_sent:
                # The head is out (a timeout abort is a SystemExit too): only closing the
                # connection can tell the client the answer is incomplete.
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration() from None
            if isinstance(exc, SystemExit):
                return None  # as gunicorn's gevent worker: the worker is stopping
            raise
        except gevent.GreenletExit:
            return None
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
            request_id.set(None)
        return True
