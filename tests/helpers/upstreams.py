"""Upstream servers for end-to-end tests: the apps behind the gateway.

``RawUpstream`` is a threaded TCP server that records every request byte for byte, as it
arrived, and answers with scripted bytes, misbehaviour included (resets, stalls, bodies cut
short, invalid framing). A thread per connection lets it hold hundreds of slow requests.

``StreamingUpstream`` is a real WSGI app on Werkzeug's threaded server, for the cases where
the interesting part is a real server streaming: events that trickle, bodies of hundreds of
megabytes generated on the fly, uploads hashed as they arrive.

``EchoUpstream`` is a plain ``http.server`` that answers every request with JSON of what it
received, headers exactly as they arrived (name case, order and repeats kept), so spoofed
and injected headers are seen as the app sees them; ``echo_of`` reads that answer back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.helpers.support import HeaderLookup


@dataclass
class Seen(HeaderLookup):
    """One request as the upstream received it."""

    repeated = "sent"

    head: bytes  # request line and header lines, without the blank line
    wire_body: bytes  # the body exactly as it came over the wire (chunk framing included)
    body: bytes  # the payload (de-chunked)
    connection: int  # serial number of the TCP connection it came on
    at: float = field(default_factory=time.monotonic)

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def method(self) -> str:
        return self.request_line.split(b" ")[0].decode("latin-1")

    @property
    def target(self) -> str:
        return self.request_line.split(b" ")[1].decode("latin-1")

    @property
    def headers(self) -> list[tuple[str, str]]:
        result = []
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            result.append((name, value.strip()))
        return result


class Exchange:
    """One request on one connection, handed to a handler that scripts the answer."""

    def __init__(self, upstream: RawUpstream, sock: socket.socket, request: Seen) -> None:
        self.upstream = upstream
        self.sock = sock
        self.request = request
        self.close = False  # set by a handler that wants the connection closed afterwards

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(
        self,
        body: bytes = b"",
        *,
        status: str = "200 OK",
        headers: list[tuple[str, str]] | None = None,
        length: bool = True,
    ) -> None:
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{name}: {value}" for name, value in headers or []]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def reset(self) -> None:
        """Abort the connection with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close = True

    def wait_for_close(self, timeout: float) -> float | None:
        """Seconds until the peer closed the connection, or None if it did not in time."""
        start = time.monotonic()
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return None
        except OSError:
            pass
        self.close = True
        return time.monotonic() - start


Handler = Callable[[Exchange], None]


def echo(exchange: Exchange) -> None:
    """The default answer: 200 with the exact bytes the upstream received as the body."""
    request = exchange.request
    exchange.reply(
        request.head + b"\r\n\r\n" + request.wire_body,
        headers=[("Content-Type", "application/octet-stream")],
    )


class RawUpstream:
    """A threaded TCP server that records requests and answers through per-path handlers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self.connections = 0
        self.received = 0  # bytes received so far, over all connections, as they arrive
        self.idle_close: float | None = None  # close a connection idle this long
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._open: set[int] = set()  # serials of the connections still open
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def route(self, prefix: str, handler: Handler) -> None:
        self.routes[prefix] = handler

    def requests_to(self, path: str) -> list[Seen]:
        """Every request whose path (before ``?``) is exactly ``path``."""
        return [seen for seen in list(self.seen) if seen.target.split("?", 1)[0] == path]

    def only(self, path: str) -> Seen:
        """The single request to ``path``: forwarded exactly once."""
        found = self.requests_to(path)
        assert len(found) == 1, f"{path} reached the upstream {len(found)} times"
        return found[0]

    def open_connections(self, *, since: int = 0) -> int:
        """How many connections numbered above ``since`` are still open."""
        return sum(1 for serial in list(self._open) if serial > since)

    def close(self) -> None:
        self.listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                serial = self.connections
            threading.Thread(target=self._serve, args=(sock, serial), daemon=True).start()

    def _count(self, size: int) -> None:
        with self._lock:
            self.received += size

    def _handler(self, target: str) -> Handler:
        path = target.split("?", 1)[0]
        best = ""
        for prefix in self.routes:
            if path.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.routes.get(best, echo)

    def _serve(self, sock: socket.socket, serial: int) -> None:
        self._sockets.add(sock)
        self._open.add(serial)
        reader = _Reader(sock, self._count)
        try:
            while True:
                sock.settimeout(self.idle_close)
                try:
                    head = reader.head()
                except (TimeoutError, OSError):
                    return
                if head is None:
                    return
                sock.settimeout(30)
                wire, body = reader.body(head)
                seen = Seen(head, wire, body, serial)
                self.seen.append(seen)
                exchange = Exchange(self, sock, seen)
                self._handler(seen.target)(exchange)
                if exchange.close:
                    return
        except OSError:
            return
        finally:
            self._sockets.discard(sock)
            self._open.discard(serial)
            with contextlib.suppress(OSError):
                sock.close()


class _Reader:
    """Reads HTTP/1.1 requests off a socket, keeping the body's wire bytes."""

    def __init__(self, sock: socket.socket, count: Callable[[int], None]) -> None:
        self.sock = sock
        self.count = count
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionResetError("peer closed")
        self.count(len(data))
        self.buf += data

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            try:
                self._fill()
            except ConnectionResetError:
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def body(self, head: bytes) -> tuple[bytes, bytes]:
        lowered = head.lower()
        if b"\r\ntransfer-encoding: chunked" in lowered:
            wire = []
            payload = []
            while True:
                line = self._line()
                wire.append(line)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        trailer = self._line()
                        wire.append(trailer)
                        if trailer == b"\r\n":
                            return b"".join(wire), b"".join(payload)
                data = self._exactly(size + 2)
                wire.append(data)
                payload.append(data[:-2])
        for line in lowered.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                data = self._exactly(int(line.split(b":", 1)[1]))
                return data, data
        return b"", b""


# --- a real app that streams -------------------------------------------------------------

BLOCK = hashlib.sha512(b"wechat-gateway").digest() * (1024 * 1024 // 64)  # 1 MiB


def big_block(index: int) -> bytes:
    """Block ``index`` of a generated download: 1 MiB, numbered so reordering shows."""
    return index.to_bytes(8, "big") + BLOCK[8:]


class _QuietHandler(WSGIRequestHandler):
    """No access lines (a logger level set instead would silence every other test's)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class StreamingUpstream:
    """A Werkzeug app on a threaded server: trickling events, big downloads, hashed uploads."""

    def __init__(self) -> None:
        self.second_event_at: float | None = None
        self.server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.port: int = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        path = request.path
        if path.endswith("/events"):
            return self._events(start_response)
        if path.endswith("/big"):
            return self._big(int(request.args["mib"]), start_response)
        if path.endswith("/upload"):
            return self._upload(request, environ, start_response)
        return Response("not found", status=404)(environ, start_response)

    def _events(self, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b"data: first\n\n"
        time.sleep(1)
        self.second_event_at = time.monotonic()
        yield b"data: second\n\n"

    def _big(self, mib: int, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib << 20))],
        )
        for index in range(mib):
            yield big_block(index)

    def _upload(
        self, request: Request, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        digest = hashlib.sha256()
        size = 0
        stream = request.stream
        while data := stream.read(1 << 20):
            digest.update(data)
            size += len(data)
        report = {
            "size": size,
            "sha256": digest.hexdigest(),
            "content_length": environ.get("CONTENT_LENGTH"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
        }
        body = json.dumps(report).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


# --- an app that echoes what it received as JSON -----------------------------------------


class EchoUpstream:
    """An app that answers each request with JSON of its method, raw target and headers."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _echo(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.targets.append(self.path)
                payload = json.dumps(
                    {
                        "method": self.command,
                        "target": self.path,
                        "headers": list(self.headers.items()),
                        "body": body.decode("latin-1"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _echo

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the gateway's access log shows every request."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Echo(HeaderLookup):
    """What the upstream reported receiving."""

    repeated = "arrived"

    method: str
    target: str
    headers: list[tuple[str, str]]

    def wechat_headers(self) -> dict[str, str]:
        """Every header the app got whose name, read as the contract reads it, is X-WeChat-*."""
        found: dict[str, str] = {}
        for name, value in self.headers:
            if is_identity_header(name):
                assert name not in found, f"{name} arrived twice"
                found[name] = value
        return found


def is_identity_header(name: str) -> bool:
    """An ``X-WeChat-*`` name as the contract reads it, but the assertion, whose value changes
    with time: ``tests/e2e/test_assertion.py`` verifies that one."""
    lower = name.lower().replace("_", "-")
    return lower.startswith("x-wechat-") and lower != "x-wechat-assertion"


def echo_of(response: requests.Response) -> Echo:
    assert response.status_code == 200, (response.status_code, response.text[:500])
    return parse_echo(response.content)


def parse_echo(body: bytes) -> Echo:
    data = json.loads(body)
    return Echo(data["method"], data["target"], [(name, value) for name, value in data["headers"]])
