"""The path an upstream will act on, for policy decisions.

The gateway forwards the raw path byte for byte, but it must decide whether a path is
public, which rules apply, on the path the upstream will *act on*, or an attacker spells
a protected path so that it looks public: ``/static/../admin``, ``/static/%2e%2e/admin``,
``/static/..%2Fadmin``, ``/static/..;/admin``, ``/static/..\\admin``.

Servers disagree on these spellings: some decode ``%2F`` into a separator, some do not;
Java servers drop ``;`` path parameters; Windows-minded ones read ``\\`` as ``/``; nginx
merges ``//``. ``policy_path`` takes the most aggressive reading: decode every escape,
read ``\\`` as ``/``, drop ``;`` parameters, merge empty segments, resolve dot segments.
A rule that says "public" is then only trusted if the path is public under that reading
*and* under the plain one (see ``gateway.access``). What cannot be read at all is refused:
a NUL byte or another control character, malformed UTF-8, escapes still not decoded after
three rounds, or dot segments that climb above the root.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_to_bytes

from gateway.errors import BadRequest

_MAX_DECODE_ROUNDS = 3
_CONTROL = re.compile(r"[\x01-\x1f\x7f]")


def _decode(path: str) -> str:
    """Percent-decode until stable (``%252e`` is ``.`` to a server that decodes twice).

    A path still not stable after ``_MAX_DECODE_ROUNDS`` is refused rather than read one
    way: a server that decodes once more would see another path.
    """
    for _ in range(_MAX_DECODE_ROUNDS + 1):
        if "%" not in path:
            break
        raw = unquote_to_bytes(path)
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid UTF-8 once decoded") from None
        if decoded == path:
            break
        path = decoded
    else:
        raise BadRequest("the path is percent-encoded too many times")
    if "\x00" in path:
        raise BadRequest("the path contains a NUL byte")
    if _CONTROL.search(path):
        # Some parsers (WHATWG URL, for one) drop tabs and newlines: "%09.." may be "..".
        raise BadRequest("the path contains control characters once decoded")
    return path


def policy_path(raw_path: str) -> str:
    """The most aggressive reading of ``raw_path``; BadRequest if it cannot be read."""
    path = _decode(raw_path).replace("\\", "/")
    resolved: list[str] = []
    for segment in path.split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if not resolved:
                raise BadRequest("the path climbs above the root")
            resolved.pop()
            continue
        resolved.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and resolved else ""
    return "/" + "/".join(resolved) + trailing


_KEPT_ESCAPES = re.compile(r"%(?!2[fF]|5[cC]|3[bB]|25)[0-9A-Fa-f]{2}(?:%[89A-Fa-f][0-9A-Fa-f])*")


def plain_path(raw_path: str) -> str:
    """The gentlest reading: escapes decoded except separators (``%2F %5C %3B``) and ``%25``."""
    if "%" not in raw_path:
        return raw_path
    return _KEPT_ESCAPES.sub(lambda m: unquote(m.group(0), errors="replace"), raw_path)
