"""WeChat's JSON, byte for byte: the quirks a client must survive, reproduced on purpose.

WeChat's ``/sns/`` replies are ``Content-Type: text/plain`` without a charset, escape ``/``
as ``\\/``, carry non-ASCII as raw UTF-8 and leave control characters from nicknames raw
inside strings (which a strict JSON parser rejects). ``json.dumps`` would escape those
controls, so this module writes the JSON itself.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

CONTENT_TYPE: Final = "text/plain"

# WeChat's own wording; the client must not depend on it, but logs look familiar.
_ERRMSGS: Final[Mapping[int, str]] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40030: "invalid refresh_token",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41003: "refresh_token missing",
    41004: "appsecret missing",
    41008: "missing code",
    41009: "missing openid",
    42001: "access_token expired",
    42002: "refresh_token expired",
    42003: "code expired",
    42007: "access_token and refresh_token exception",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    48001: "api unauthorized",
    50001: "user unauthorized",
}


def error_payload(errcode: int) -> dict[str, object]:
    """``{"errcode": N, "errmsg": "..., rid: ..."}`` with a fresh request id, as WeChat sends."""
    rid = "-".join(secrets.token_hex(4) for _ in range(3))
    return {"errcode": errcode, "errmsg": f"{_ERRMSGS.get(errcode, 'system error')}, rid: {rid}"}


def encode(value: object) -> bytes:
    """Serialize like WeChat: ``\\/`` escapes, raw UTF-8, raw control characters."""
    return _json(value).encode("utf-8")


def _json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_string(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(_json(item) for item in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _string(text: str) -> str:
    # Only what JSON cannot do without, plus WeChat's "\/"; everything else stays raw, but
    # for half an emoji (a lone surrogate), which has no UTF-8 form: WeChat sends "\ud83d".
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("/", "\\/")
    return '"' + _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'
