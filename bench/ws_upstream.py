"""The WebSocket upstream of the benchmark: raw sockets on one asyncio loop, nothing else.

``python bench/ws_upstream.py --port N`` serves, on 127.0.0.1:N,

- ``GET /echo`` (WebSocket): every frame the client sends comes back unmasked with the same
  opcode; a close frame is answered with a close frame;
- ``GET /stream/<n>`` (WebSocket): ``n`` bytes of binary payload in 1 MiB frames as fast as
  the connection takes them, then a close frame (code 1000);
- any other GET without ``Upgrade``: ``200`` and a short body (the harness's readiness probe).

It holds ten thousand idle connections cheaply (one task awaiting one ``recv`` each, no
buffer while waiting) and writes the large stream from one preallocated frame, so that it is
never what a contender's numbers measure. Not hardened: the benchmark's peer only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import resource
import socket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_READ = 256 * 1024
FRAME_PAYLOAD = 1024 * 1024
#: A close frame, code 1000, unmasked (server to client).
CLOSE_NORMAL = b"\x88\x02\x03\xe8"


def accept_key(key: str) -> str:
    digest = hashlib.sha1(key.strip().encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def frame_head(opcode: int, length: int, *, fin: bool = True, mask: bytes = b"") -> bytes:
    """A frame header (RFC 6455 5.2): masked when ``mask`` (4 bytes) is given."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 1 << 16:
        head = bytes((first, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + length.to_bytes(8, "big")
    return head + mask


def unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def parse_frame(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """The first complete frame in ``buffer``: (opcode, unmasked payload, bytes it took)."""
    if len(buffer) < 2:
        return None
    opcode, second = buffer[0] & 0x0F, buffer[1]
    length, pos = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, pos = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, pos = int.from_bytes(buffer[2:10], "big"), 10
    mask = b""
    if second & 0x80:
        if len(buffer) < pos + 4:
            return None
        mask, pos = bytes(buffer[pos : pos + 4]), pos + 4
    if len(buffer) < pos + length:
        return None
    payload = bytes(buffer[pos : pos + length])
    return opcode, unmask(payload, mask) if mask else payload, pos + length


class Upstream:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        big = bytes(FRAME_PAYLOAD)
        self.big_frame = frame_head(0x2, len(big)) + big

    async def serve(self, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(4096)
        listener.setblocking(False)
        tasks: set[asyncio.Task[None]] = set()
        while True:
            conn, _ = await self.loop.sock_accept(listener)
            conn.setblocking(False)
            task = self.loop.create_task(self.handle(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def handle(self, conn: socket.socket) -> None:
        try:
            await self._handle(conn)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    async def _handle(self, conn: socket.socket) -> None:
        loop = self.loop
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            data = await loop.sock_recv(conn, 4096)
            if not data:
                return
            buffer += data
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "websocket" not in headers.get("upgrade", "").lower():
            body = b"ws-upstream\n"
            await loop.sock_sendall(
                conn,
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            )
            return
        accept = accept_key(headers["sec-websocket-key"])
        await loop.sock_sendall(
            conn,
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode("ascii"),
        )
        if path.startswith("/stream/"):
            await self.stream(conn, int(path.rsplit("/", 1)[1]))
        else:
            await self.echo(conn, bytearray(rest))

    async def echo(self, conn: socket.socket, buffer: bytearray) -> None:
        loop = self.loop
        while True:
            while (frame := parse_frame(buffer)) is not None:
                opcode, payload, used = frame
                del buffer[:used]
                await loop.sock_sendall(conn, frame_head(opcode, len(payload)) + payload)
                if opcode == 0x8:
                    return
            data = await loop.sock_recv(conn, _READ)
            if not data:
                return
            buffer += data

    async def stream(self, conn: socket.socket, size: int) -> None:
        loop = self.loop
        frame = self.big_frame
        while size >= FRAME_PAYLOAD:
            await loop.sock_sendall(conn, frame)
            size -= FRAME_PAYLOAD
        if size:
            await loop.sock_sendall(conn, frame_head(0x2, size) + bytes(size))
        await loop.sock_sendall(conn, CLOSE_NORMAL)
        # The client answers the close and closes; read until it has.
        with contextlib.suppress(OSError):
            while await loop.sock_recv(conn, _READ):
                pass


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(port: int) -> None:
    await Upstream().serve(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the benchmark's WebSocket upstream")
    parser.add_argument("--port", type=int, required=True)
    raise_open_files_limit()
    asyncio.run(main(parser.parse_args().port))
