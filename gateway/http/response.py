"""A small, strict HTTP/1.1 response reader for the upstream side of the proxy.

``http.client.HTTPResponse`` parses headers with the ``email`` package, which costs more
than everything else the gateway does per request; it also only skips ``100 Continue``
among interim responses and quietly accepts conflicting ``Content-Length`` values. This
reader does the one job the proxy needs: parse a response head from a socket, decide its
framing the way RFC 9112 6.3 says, and hand out the body as the bytes arrive, raising
``IncompleteBody`` when the upstream stops early so a short body never looks complete.
"""

from __future__ import annotations

import re
import socket
import time

_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4096
_RECV = 256 * 1024
# Heads and small bodies come in small reads: a 256 KiB buffer per read costs more than it
# saves there.
_HEAD_RECV = 16 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# RFC 9110 5.5: control characters in a field value are replaced with SP (HTAB stays), so
# a bare CR or LF can never split the head the gateway writes to the client.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# A field name's characters (an RFC 9110 5.6.2 token), and those a value may hold unchanged.
_NAME_CHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VALUE_CHAR = r"[^\x00-\x08\x0a-\x1f\x7f]"
_TOKEN_NAME = re.compile(rf"{_NAME_CHAR}+")
# A header line that needs no cleaning: a token, a colon, a value without control
# characters (leading blanks left out). Anything else takes the careful path. Possessive,
# so a value of blanks cannot be split two ways and a line is matched or refused in one
# pass (backtracking made a 64 KiB line of blanks cost seconds).
_PLAIN_FIELD = re.compile(rf"({_NAME_CHAR}++):[ \t]*+({_VALUE_CHAR}*+)")
# Every field line of a head plain, and such a line where it ends: the usual head is read
# in one pass.
_PLAIN_FIELDS = re.compile(rf"(?:{_NAME_CHAR}++:{_VALUE_CHAR}*+(?:\r\n(?!\Z)|\Z))*+")
_findall_fields = re.compile(rf"{_PLAIN_FIELD.pattern}(?:\r\n|\Z)").findall
# The fields that decide how the body ends.
_FRAMING_FIELDS = frozenset({"transfer-encoding", "content-length", "connection"})


def _clean(value: str) -> str:
    """A field value without surrounding whitespace, control characters made spaces."""
    if _CONTROL.search(value):
        value = _CONTROL.sub(" ", value)
    return value.strip(" \t")


def _careful_fields(block: str) -> list[tuple[str, str]]:
    """The fields of a head with a line that is not plain: continuation lines joined,
    control characters made spaces, a line that is no field refused."""
    headers: list[tuple[str, str]] = []
    plain_field = _PLAIN_FIELD.fullmatch
    for line in block.split("\r\n"):
        match = plain_field(line)
        if match is not None:
            name, value = match.groups()
            headers.append((name, value.rstrip(" \t")))
            continue
        if line[:1] in (" ", "\t"):
            if not headers:
                raise InvalidResponse("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {_clean(line)}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN_NAME.fullmatch(name):
            raise InvalidResponse("invalid header line")
        headers.append((name, _clean(value)))
    return headers


class InvalidResponse(Exception):
    """The upstream's answer is not valid HTTP/1.1."""


class IncompleteBody(Exception):
    """The upstream closed the connection before the end of the body."""


class ClosedBeforeResponse(Exception):
    """The upstream closed the connection without sending a byte of a response."""


class Response:
    """One upstream response: status, headers, framing, and the body as a stream."""

    __slots__ = (
        "_after_chunk",
        "_buf",
        "_chunk_left",
        "_framing",
        "_sock",
        "bodiless",
        "chunked",
        "complete",
        "connection_tokens",
        "declared_length",
        "headers",
        "length",
        "lower_names",
        "reason",
        "status",
        "unknown_coding",
        "will_close",
    )

    status: int
    reason: str
    headers: list[tuple[str, str]]
    #: The header names lower-cased, in the order of ``headers``.
    lower_names: list[str]
    #: The ``Connection`` tokens, lower-cased: names of more hop-by-hop headers.
    connection_tokens: frozenset[str]
    length: int | None
    bodiless: bool
    declared_length: int | None
    chunked: bool
    will_close: bool
    complete: bool
    #: A transfer coding other than chunked (gzip...), which this reader does not undo.
    unknown_coding: bool

    def __init__(self, sock: socket.socket, method: str, *, deadline: float | None = None) -> None:
        """Read the response head; ``deadline`` (``time.monotonic()``) bounds the whole head.

        A per-read timeout alone would let an upstream that trickles its head (or sends
        interim responses) hold the request for ever; past the deadline, ``TimeoutError``.
        """
        self._sock = sock
        self._buf = b""
        self._chunk_left = 0
        self._after_chunk = False
        interim = False
        while True:
            head = self._read_head(deadline, after_interim=interim)
            self._parse_head(head)
            interim = True
            # Interim responses (100 Continue, 103 Early Hints...) are skipped; 101 would
            # switch protocols, which this proxy never asks for, so it is final here.
            if not 100 <= self.status < 200 or self.status == 101:
                break
        self._decide_framing(method)

    def _read_head(self, deadline: float | None, *, after_interim: bool) -> bytes:
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end > _MAX_HEAD or (end == -1 and len(buf) > _MAX_HEAD):
                raise InvalidResponse("response head too large")
            if end != -1:
                self._buf = buf[end + 4 :]
                return buf[:end]
            start = max(0, len(buf) - 3)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete response head before the deadline")
                self._sock.settimeout(left)
            data = self._sock.recv(_HEAD_RECV)
            if not data:
                if buf:
                    raise InvalidResponse("connection closed inside the response head")
                if after_interim:
                    # It did answer, so this is no stale connection to retry on.
                    raise InvalidResponse("connection closed after an interim response")
                raise ClosedBeforeResponse
            buf += data

    def _parse_head(self, head: bytes) -> None:
        # latin-1 maps bytes to code points one to one: str methods do the rest faster.
        status_line, fields, block = head.decode("latin-1").partition("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise InvalidResponse("invalid status line")
        self.status = int(code)
        self.reason = _clean(reason)
        if not fields:
            headers = []
        elif block and _PLAIN_FIELDS.fullmatch(block):
            # The usual head, every line plain: the fields in one pass, values trimmed.
            headers = [(name, value.rstrip(" \t")) for name, value in _findall_fields(block)]
        else:
            headers = _careful_fields(block)
        lower_names = [name.lower() for name, _ in headers]
        self.headers = headers
        self.lower_names = lower_names
        self._framing = [
            (lower, headers[i][1])
            for i, lower in enumerate(lower_names)
            if lower in _FRAMING_FIELDS
        ]
        self.will_close = version == "HTTP/1.0"

    def _decide_framing(self, method: str) -> None:
        """RFC 9112 6.3: how the body ends."""
        transfer_codings: list[str] = []
        lengths: set[str] = set()
        connection: set[str] = set()
        for lower, value in self._framing:
            if lower == "transfer-encoding":
                transfer_codings.extend(c.strip().lower() for c in value.split(",") if c.strip())
            elif lower == "content-length":
                lengths.update(v.strip() for v in value.split(","))
            elif lower == "connection":
                connection.update(t.strip().lower() for t in value.split(","))
        self.connection_tokens = frozenset(connection)
        self.unknown_coding = any(coding != "chunked" for coding in transfer_codings)
        # HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless told not to.
        http10 = self.will_close
        self.will_close = "close" in connection or (http10 and "keep-alive" not in connection)
        self.chunked = False
        self.length = None
        # A HEAD or 304 answer may still state the length of the representation it is about.
        single = next(iter(lengths)) if len(lengths) == 1 else ""
        self.declared_length = int(single) if single.isdigit() else None
        self.bodiless = method == "HEAD" or self.status in _NO_BODY_STATUS or self.status < 200
        if self.bodiless:
            self.length = 0
        elif transfer_codings:
            if transfer_codings[-1] == "chunked":
                self.chunked = True
            else:
                self.will_close = True  # ends when the connection closes
            if lengths or http10:
                # RFC 9112 6.1 and 6.3: chunked wins, but the upstream may disagree about
                # where its answer ends, so this connection carries nothing after it.
                self.will_close = True
        elif lengths:
            if self.declared_length is None:
                raise InvalidResponse("invalid or conflicting Content-Length")
            self.length = self.declared_length
        else:
            self.will_close = True
        self.complete = self.length == 0

    def read1(self, size: int = _RECV) -> bytes:
        """Some body bytes, as soon as any are available; b"" at the end of the body."""
        if self.complete:
            return b""
        if self.chunked:
            return self._read1_chunked(size)
        if self.length is None:
            data = self._take(size)
            if not data:
                self.complete = True
            return data
        data = self._take(min(size, self.length))
        if not data:
            raise IncompleteBody
        self.length -= len(data)
        if not self.length:
            self.complete = True
        return data

    def take_buffered(self) -> bytes:
        """Bytes read past the head and not yet taken: after a ``101``, the new protocol's."""
        data, self._buf = self._buf, b""
        return data

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request: body done, nothing left over."""
        return self.complete and not self.will_close and not self._buf

    def _take(self, size: int) -> bytes:
        buf = self._buf
        if buf:
            data, self._buf = buf[:size], buf[size:]
            return data
        return self._sock.recv(size)

    def _read1_chunked(self, size: int) -> bytes:
        if not self._chunk_left:
            # The CRLF after a chunk's data is consumed here, before the next size line,
            # so data already received is never held back waiting for it.
            if self._after_chunk and self._readline() != b"":
                raise InvalidResponse("chunk data not followed by CRLF")
            chunk_size = self._next_chunk_size()
            if not chunk_size:
                self._skip_trailers()
                self.complete = True
                return b""
            self._chunk_left = chunk_size
            self._after_chunk = True
        data = self._take(min(size, self._chunk_left))
        if not data:
            raise IncompleteBody
        self._chunk_left -= len(data)
        return data

    def _next_chunk_size(self) -> int:
        line = self._readline()
        size_text = line.split(b";", 1)[0].rstrip(b" \t")
        # int() alone would also take "-1", "+5", "0x5" and "0_5"; RFC 9112 7.1: 1*HEXDIG.
        if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
            raise InvalidResponse("invalid chunk size")
        return int(size_text, 16)

    def _skip_trailers(self) -> None:
        while self._readline():
            pass

    def _readline(self) -> bytes:
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end != -1:
                self._buf = buf[end + 1 :]
                return buf[:end].rstrip(b"\r")
            if len(buf) > _MAX_CHUNK_LINE:
                raise InvalidResponse("chunk line too long")
            data = self._sock.recv(_RECV)
            if not data:
                raise IncompleteBody
            buf += data
