"""Serve a simulator (WeChat's ``Simulator``, WeCom's ``WeComSimulator``, any WSGI app) on a
real socket from a background thread.

Used by ``wechat-gateway demo`` and by tests that need WeChat or WeCom on the wire. This is
Werkzeug's threaded development server: fine for loopback demos and tests, not for
anything exposed, since the control API under ``/_sim/`` has no authentication.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gateway.simulator.app import Simulator

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


App = TypeVar("App", bound="WSGIApplication")


class _RequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The query string carries app secrets, codes and tokens: log the path only.
        self.log("info", '"%s %s" %s', self.command, self.path.partition("?")[0], code)


class Served(Generic[App]):
    """A simulator on a loopback socket: ``port=0`` picks a free port; ``url`` tells which
    one was bound."""

    #: The serving thread's name.
    thread_name = "simulator"

    def __init__(self, simulator: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._server: BaseWSGIServer = make_server(
            host, port, simulator, threaded=True, request_handler=_RequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.thread_name, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL: every base URL of the simulated service (``open_base``,
        ``api_base``...)."""
        host = self._server.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{self._server.server_port}"

    @property
    def domain(self) -> str:
        """``host:port``, as an app's trusted domain would name this server."""
        return self.url.removeprefix("http://")

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests and close the listening socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorServer(Served[Simulator]):
    """``with SimulatorServer(Simulator.default()) as server: server.url ...``"""

    thread_name = "wechat-simulator"
