"""WebSocket end to end: a real WebSocket app behind the gateway, and clients on the wire.

``WsUpstream`` is a ``websockets`` (the library) server on a thread, as an app behind the
gateway would run one. Every connection it accepts becomes a ``Peer``: the handshake
headers as they arrived, every message received, and the close frame the app got (code and
reason), or none when its connection simply ended. It echoes every message back; a test
can also make it send, ping, close with a code, or vanish (its TCP connection ending at a
frame boundary, reset, or cut in the middle of a frame). Paths ending in a few names make
its handshake misbehave (``BROKEN_HANDSHAKES``: a 101 without ``Upgrade``, with a wrong
``Sec-WebSocket-Accept``...; ``/status/404``: a plain 404), and a request that is not a
WebSocket handshake is answered with JSON of what arrived (``PlainRequest``).

On the client side, ``connect`` is the ``websockets`` client for ordinary traffic;
``RawWebSocket`` writes a handshake exactly as given and then frames byte by byte (masked or
not, fragments, partial frames), for malformed handshakes and frames cut short.
``open_websockets`` reads the gateway's tunnel gauge; ``wait_open_websockets`` polls it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.helpers.support import HeaderLookup

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The subprotocol the app speaks, when a client offers it.
SUBPROTOCOL = "chat.v1"

#: Handshakes the app gets wrong, by the last segment of the path: what its 101 lacks.
BROKEN_HANDSHAKES = ("no-upgrade", "upgrade-h2c", "no-connection", "no-accept", "bad-accept")

OPCODES = {"cont": 0x0, "text": 0x1, "binary": 0x2, "close": 0x8, "ping": 0x9, "pong": 0xA}


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: base64 of 16 random bytes."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_of(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` that answers ``key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


# --- the app behind the gateway -------------------------------------------------------------


@dataclass
class PlainRequest(HeaderLookup):
    """A request the app received: its path and headers, as they arrived."""

    repeated = "sent"

    path: str
    headers: list[tuple[str, str]]


@dataclass(eq=False)
class Peer(HeaderLookup):
    """One WebSocket the app accepted, seen from the app."""

    repeated = "sent"

    connection: ServerConnection
    path: str
    headers: list[tuple[str, str]]
    messages: list[str | bytes] = field(default_factory=list)
    #: The close frame the app received; None while open, or if its connection just ended.
    close_rcvd: Close | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    def send(self, message: str | bytes | Iterable[str] | Iterable[bytes]) -> None:
        """A message (an iterable is sent as one fragmented message, a frame per item)."""
        self.connection.send(message)

    def close(self, code: int, reason: str = "") -> None:
        self.connection.close(code, reason)

    def ping(self, payload: bytes) -> threading.Event:
        """A ping; the event is set when the matching pong arrives."""
        return self.connection.ping(payload)

    def vanish(self, *, reset: bool = False) -> None:
        """The app's TCP connection ends here, with no close frame: a FIN, or a reset."""
        sock = self.connection.socket
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)  # wakes the library's reader; nothing sent yet
            sock.close()
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def vanish_mid_frame(self, frame: bytes, cut: int) -> None:
        """The first ``cut`` bytes of ``frame`` go out, then the connection ends (a FIN)."""
        sock = self.connection.socket
        sock.sendall(frame[:cut])
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def wait_ended(self, timeout: float = 5) -> Close | None:
        assert self.ended.wait(timeout), f"the app's connection to {self.path} is still open"
        return self.close_rcvd

    def wait_messages(self, count: int, timeout: float = 5) -> list[str | bytes]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"the app got {len(self.messages)} of {count}"
            time.sleep(0.01)
        return self.messages


class WsUpstream:
    """The ``websockets`` server behind the gateway; ``close()`` stops it."""

    def __init__(self) -> None:
        self.requests: list[PlainRequest] = []  # every request that reached it, in order
        self.peers: list[Peer] = []
        self._new: queue.Queue[Peer] = queue.Queue()
        self._lock = threading.Lock()
        self.server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=_select_subprotocol,
            compression="deflate",
            ping_interval=None,
            close_timeout=2,
            max_size=None,
        )
        self.port = int(self.server.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self._thread.join(5)
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.connection.socket.close()

    def requests_to(self, path: str) -> list[PlainRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def next_peer(self, path: str | None = None, timeout: float = 5) -> Peer:
        """The next WebSocket the app accepts (on ``path``, when given)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                peer = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no WebSocket reached the app on {path}") from None
            if path is None or peer.path == path:
                return peer

    def drain(self) -> None:
        """Forget the peers not yet taken with ``next_peer``."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._new.get_nowait()

    # -- the server's side -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        seen = PlainRequest(request.path, list(request.headers.raw_items()))
        with self._lock:
            self.requests.append(seen)
        last = request.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if request.path.startswith("/status/"):
            return connection.respond(int(last), f"the app answers {last}\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            answer = connection.respond(
                200, json.dumps({"path": seen.path, "headers": seen.headers})
            )
            del answer.headers["Content-Type"]
            answer.headers["Content-Type"] = "application/json"
            return answer
        return None

    @staticmethod
    def _process_response(
        connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code != 101:
            return None
        last = request.path.split("?", 1)[0].rsplit("/", 1)[-1]
        headers = response.headers
        if last == "no-upgrade":
            del headers["Upgrade"]
        elif last == "upgrade-h2c":
            del headers["Upgrade"]
            headers["Upgrade"] = "h2c"
        elif last == "no-connection":
            del headers["Connection"]
        elif last == "no-accept":
            del headers["Sec-WebSocket-Accept"]
        elif last == "bad-accept":
            del headers["Sec-WebSocket-Accept"]
            headers["Sec-WebSocket-Accept"] = accept_of(new_key())
        return None

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        peer = Peer(connection, request.path, list(request.headers.raw_items()))
        with self._lock:
            self.peers.append(peer)
        self._new.put(peer)
        try:
            for message in connection:
                peer.messages.append(message)
                connection.send(message)
        except ConnectionClosed:
            pass
        finally:
            peer.close_rcvd = connection.protocol.close_rcvd
            peer.ended.set()


def _select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in subprotocols else None


# --- clients --------------------------------------------------------------------------------


def connect(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    compression: str | None = None,
    subprotocols: Sequence[str] | None = None,
) -> ClientConnection:
    """The ``websockets`` client on ``ws://127.0.0.1:port/path``; no proxy, no keepalive pings,
    no message size limit, no compression unless asked."""
    return ws_connect(
        f"ws://127.0.0.1:{port}{path}",
        additional_headers=list(headers),
        compression=compression,
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
        proxy=None,
        open_timeout=5,
        ping_interval=None,
        close_timeout=3,
        max_size=None,
    )


def handshake_headers(
    key: str | None = None,
    *,
    version: str | None = "13",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
) -> list[tuple[str, str]]:
    """A client's handshake headers (a fresh key unless given); None leaves one out."""
    fields = [
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Key", new_key() if key is None else key),
        ("Sec-WebSocket-Version", version),
    ]
    return [(name, value) for name, value in fields if value is not None]


@dataclass
class Answer(HeaderLookup):
    """An HTTP answer read off the wire: status, headers as they came, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict[str, Any]:
        assert (self.value("Content-Type") or "").startswith("application/json"), (
            self.status,
            self.headers,
            self.body[:300],
        )
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    masked: bool
    rsv: int = 0

    @property
    def close_code(self) -> int:
        assert self.opcode == OPCODES["close"], self
        return int.from_bytes(self.payload[:2], "big")

    @property
    def close_reason(self) -> str:
        assert self.opcode == OPCODES["close"], self
        return self.payload[2:].decode("utf-8")


def frame_bytes(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """One frame as RFC 6455 5.2 lays it out; masked as a client must."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    flag = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head += bytes([flag | size])
    elif size < 1 << 16:
        head += bytes([flag | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([flag | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode("utf-8")


class RawConnection:
    """A TCP connection to the gateway: requests written exactly as given, answers and
    frames read byte by byte."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def send_request(
        self,
        path: str,
        headers: Sequence[tuple[str, str]],
        *,
        method: str = "GET",
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> None:
        lines = [f"{method} {path} {version}", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)

    def read_answer(self, *, head_only: bool = False) -> Answer:
        """The next answer; its body too (by ``Content-Length``, chunks, or to the end)
        unless it is a 101 or ``head_only``."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"the connection ended before an answer: {self.buffer!r}"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith(("HTTP/1.1 ", "HTTP/1.0 ")), status_line
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        answer = Answer(int(status_line.split(" ")[1]), headers, b"")
        if answer.status == 101 or head_only:
            return answer
        length = answer.value("Content-Length")
        if length is not None:
            answer.body = self.read_exactly(int(length))
        elif (answer.value("Transfer-Encoding") or "").lower() == "chunked":
            answer.body = self._read_chunks()
        else:
            answer.body = self.read_to_end()
        return answer

    def _read_chunks(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_line().split(b";")[0], 16)
            if size == 0:
                while self._read_line():
                    pass
                return body
            body += self.read_exactly(size)
            self.read_exactly(2)

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the connection ended inside a chunked body"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self.buffer)))
            assert chunk, f"the connection ended after {len(self.buffer)} of {size} bytes"
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_to_end(self, timeout: float = 10) -> bytes:
        """Everything until the gateway ends the connection (a FIN or a reset)."""
        self.sock.settimeout(timeout)
        data, self.buffer = self.buffer, b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data

    # -- WebSocket frames ----------------------------------------------------------------------

    def send_frame(self, kind: str, payload: bytes, *, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(frame_bytes(OPCODES[kind], payload, fin=fin, mask=mask))

    def recv_frame(self, timeout: float = 5) -> Frame:
        self.sock.settimeout(timeout)
        first, second = self.read_exactly(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(self.read_exactly(2), "big")
        elif size == 127:
            size = int.from_bytes(self.read_exactly(8), "big")
        masked = bool(second & 0x80)
        key = self.read_exactly(4) if masked else b""
        payload = self.read_exactly(size)
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(bool(first & 0x80), first & 0x0F, payload, masked, (first >> 4) & 0x7)


def open_raw(
    port: int, path: str, headers: Sequence[tuple[str, str]] = (), *, key: str | None = None
) -> tuple[RawConnection, Answer]:
    """A raw WebSocket through the gateway: its connection, after the handshake's answer."""
    connection = RawConnection(port)
    connection.send_request(path, [*handshake_headers(key), *headers])
    return connection, connection.read_answer()


def exchange(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    *,
    method: str = "GET",
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> Answer:
    """One request on a fresh connection, written exactly as given, and its answer (the
    head only for a 101, whose connection is then closed)."""
    with RawConnection(port) as connection:
        connection.send_request(path, headers, method=method, body=body, version=version)
        return connection.read_answer()


# --- the gateway's gauge --------------------------------------------------------------------

_GAUGE = re.compile(r"^wechat_gateway_open_websockets (\d+)$", re.MULTILINE)


def open_websockets(port: int) -> int:
    """``wechat_gateway_open_websockets`` from the gateway's ``/_gateway/metrics``."""
    answer = exchange(port, "/_gateway/metrics", [("Connection", "close")])
    assert answer.status == 200, answer
    found = _GAUGE.search(answer.body.decode("utf-8"))
    assert found is not None, answer.body[-2000:]
    return int(found.group(1))


def wait_open_websockets(port: int, expected: int, timeout: float = 10) -> float:
    """Seconds until the gauge reads ``expected``; fails after ``timeout``."""
    read: list[int] = []

    def reached() -> bool:
        read.append(open_websockets(port))
        return read[-1] == expected

    try:
        return until(reached, timeout, f"{expected} open tunnels")
    except AssertionError:
        raise AssertionError(
            f"{read[-1]} tunnels open, not {expected}, after {timeout} s"
        ) from None


def until(condition: Callable[[], bool], timeout: float, what: str = "the condition") -> float:
    """Seconds until ``condition()`` holds, polled; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start
