"""Serve a ``Simulator`` on a real socket from a background thread.

Used by ``wechat-gateway demo`` and by tests that need WeChat on the wire. This is
Werkzeug's threaded development server: fine for loopback demos and tests, not for
anything exposed, since the control API under ``/_sim/`` has no authentication.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from gateway.simulator.app import Simulator


class _RequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The query string carries app secrets, codes and tokens: log the path only.
        self.log("info", '"%s %s" %s', self.command, self.path.partition("?")[0], code)


class SimulatorServer:
    """``with SimulatorServer(Simulator.default()) as server: server.url ...``

    ``port=0`` picks a free port; ``url`` tells which one was bound.
    """

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._server: BaseWSGIServer = make_server(
            host, port, simulator, threaded=True, request_handler=_RequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="wechat-simulator", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, usable as both ``open_base`` and ``api_base``."""
        host = self._server.server_address[0]
        if isinstance(host, bytes):
            host = host.decode()
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{self._server.server_port}"

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
