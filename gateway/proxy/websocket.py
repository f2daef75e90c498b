"""What the gateway needs to know of WebSocket (RFC 6455): the handshake, and frame edges.

The tunnel copies bytes; it never reassembles messages. It only needs

- to tell a WebSocket handshake from an ordinary request, and refuse a malformed one before
  anything reaches the upstream (``websocket_handshake``);
- to check the upstream's ``101`` against the client's key (``accept_key``);
- to know, in each direction, whether the bytes sent so far end on a frame boundary and
  whether a close frame went by (``FrameEdges``): the gateway may only add a close frame of
  its own (a revoked session, a shutdown) between two frames;
- to write that close frame (``close_frame``).

Reading frame headers costs a few operations per frame; payloads are skipped, never looked
at, so a large message costs as little as one header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import TYPE_CHECKING

from gateway.errors import BadRequest, UpgradeRequired

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CLOSE = 0x8

#: Close codes the gateway sends (RFC 6455 7.4.1 and the IANA registry).
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
BAD_GATEWAY = 1014


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def websocket_handshake(environ: WSGIEnvironment) -> bool:
    """Whether this request asks for a WebSocket, checked: True for a valid handshake;
    False for no upgrade, an upgrade to another protocol, or an ``Upgrade`` that does not
    count (RFC 9110 7.8: not named in ``Connection``, or in an HTTP/1.0 request), all passed
    on as plain requests with ``Upgrade`` dropped; ``BadRequest`` for a WebSocket upgrade
    that is not a valid handshake."""
    upgrade = environ.get("HTTP_UPGRADE")
    if upgrade is None:
        return False
    # Protocol names are compared case-insensitively ("WebSocket" is "websocket").
    if not any(token.split("/", 1)[0] == "websocket" for token in _tokens(upgrade)):
        return False
    if "upgrade" not in _tokens(environ.get("HTTP_CONNECTION", "")):
        return False
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return False
    if environ.get("REQUEST_METHOD") != "GET":
        raise BadRequest("a WebSocket handshake must be a GET request")
    length = environ.get("CONTENT_LENGTH")
    if "HTTP_TRANSFER_ENCODING" in environ or (length and length.strip() not in ("", "0")):
        raise BadRequest("a WebSocket handshake has no body")
    if not valid_key(environ.get("HTTP_SEC_WEBSOCKET_KEY", "")):
        raise BadRequest("missing or malformed Sec-WebSocket-Key")
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise UpgradeRequired("this gateway speaks WebSocket version 13")
    return True


def valid_key(key: str) -> bool:
    """RFC 6455 4.1: base64 of 16 bytes, so 24 characters ending in ``==``."""
    key = key.strip()
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` that answers ``key``."""
    digest = hashlib.sha1(key.strip().encode("ascii") + _GUID).digest()  # noqa: S324 - RFC 6455
    return base64.b64encode(digest).decode("ascii")


def close_frame(code: int, reason: str = "", *, masked: bool = False) -> bytes:
    """A close frame: unmasked from the gateway to the browser (it is the server there),
    masked from the gateway to the upstream (it is the client there)."""
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
    if not masked:
        return bytes((0x80 | _OP_CLOSE, len(payload))) + payload
    key = os.urandom(4)
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes((0x80 | _OP_CLOSE, 0x80 | len(payload))) + key + body


class FrameEdges:
    """Where the frames of one direction begin and end, from their headers only.

    ``feed`` is given every piece of the stream in order and answers whether the stream, so
    far, ends exactly between two frames. ``closed`` turns true once a close frame began.
    """

    __slots__ = ("_head", "_skip", "closed")

    def __init__(self) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._head = b""  # a frame header cut by the end of a piece
        self.closed = False

    def feed(self, data: bytes) -> bool:
        size = len(data)
        skip = self._skip
        if skip >= size:  # inside a payload: the common case for large messages
            self._skip = skip - size
            return self._skip == 0
        pos = skip
        if self._head:
            data = self._head + data
            size = len(data)
            self._head = b""
        while pos < size:
            avail = size - pos
            if avail < 2:
                self._head = data[pos:]
                self._skip = 0
                return False
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            head = 2 if length < 126 else (4 if length == 126 else 10)
            if second & 0x80:
                head += 4
            if avail < head:
                self._head = data[pos:]
                self._skip = 0
                return False
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if first & 0x0F == _OP_CLOSE:
                self.closed = True
            pos += head + length
        self._skip = pos - size
        return pos == size
