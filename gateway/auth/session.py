"""The stateless session cookie.

A logged-in browser carries its whole session in one encrypted, authenticated cookie.
Nothing is stored on the server, so any worker, a restarted process or another replica
reads it with nothing but ``session.secret``. :class:`SessionCodec` turns a
:class:`Session` into that cookie value and back; its generic :meth:`~SessionCodec.seal`
and :meth:`~SessionCodec.unseal` protect other short-lived values the same way (the
login-state cookie).

Construction
------------

AES-256-GCM with a fresh random 96-bit nonce per token. The key is derived once, when the
codec is built, from the configured secret with HKDF-SHA256 (fixed salt and info naming
the project and this use). The same derivation yields a 4-byte key id, a fingerprint that
lets :meth:`~SessionCodec.decode` pick the right key directly. A token is::

    version (1 byte, 0x01) | key id (4) | nonce (12) | ciphertext | GCM tag (16)

encoded as base64url without padding. The associated data is the version byte, the key id
and the token's *purpose* (``b"session"`` for sessions), so a token sealed for one purpose
never opens as another. The plaintext starts with the absolute expiry time (8-byte unsigned
big-endian unix seconds), checked on every read with the codec's clock: the cookie's
``Max-Age`` is only a hint to the browser. A session's payload after it is a compact JSON
list of the remaining fields, headed by the payload's version, the provider that signed
the user in and the session's id: ``[2, "wechat", sid, openid, app_id, unionid, nickname,
avatar, issued_at, refresh_token, validated_at]``; a WeCom member's session is version 3,
which adds its userid, departments and the departments above them. A version-1 payload
(the fields from openid on, written by earlier releases) is still read, as a WeChat session
without an id; any other shape is no session.

Decoding runs on every request, so it is cheap: a length cap before anything else, one
base64 decode, one key lookup, one AES-GCM open, one small JSON parse. Everything that is
not a valid, current token of the right purpose (missing, malformed, non-canonical
base64, tampered, sealed with an unknown key, for another purpose, expired) reads as "no
session": :meth:`~SessionCodec.decode` returns ``None`` and never raises.

Being stateless has a price: a cookie stays valid until its sealed expiry, logging out
only clears it in that browser, and a single session cannot be revoked on the server. The
way to revoke every session at once is to change the secret.

Key rotation
------------

``secret`` writes; ``previous_secrets`` are only read. To rotate, make the new value the
secret and move the old one to the previous secrets until every cookie written with it
has expired (``session.max_age``), then drop it. :meth:`~SessionCodec.decode_with_meta`
tells the caller when a cookie was read with an old key, so it can be re-issued.

Size
----

Browsers silently drop a cookie over 4096 bytes, which would look like a login loop.
:meth:`~SessionCodec.encode` and :meth:`~SessionCodec.seal` raise :exc:`SessionTooLarge`
rather than produce a value over 3800 characters (room for the cookie name and
attributes). Realistic WeChat sessions are a few hundred characters; the limit is only
reached with absurd profile data, which is better refused loudly than truncated into a
different identity. Values over 4096 characters are rejected by ``decode`` before any
cryptography.

Exceptions::

    ValueError
     +-- SessionTooLarge    a sealed value would not fit in a cookie

Construction raises :exc:`ValueError` for a secret shorter than 32 characters. No
exception message, repr or log line ever contains a secret, a refresh token or a cookie
value.
"""

from __future__ import annotations

import binascii
import json
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.auth.cookies import CookieSpec, request_cookies

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["SESSION_PURPOSE", "Session", "SessionCodec", "SessionTooLarge"]

#: The purpose that session cookies are sealed for.
SESSION_PURPOSE = b"session"

_MIN_SECRET_CHARS = 32
_VERSION = 1
_VERSION_BYTE = bytes((_VERSION,))
_KEY_SIZE = 32
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_PREFIX_SIZE = _HEADER_SIZE + _NONCE_SIZE
_EXPIRY = struct.Struct(">Q")
_MIN_TOKEN_BYTES = _PREFIX_SIZE + _EXPIRY.size + _TAG_SIZE
_HKDF_SALT = b"wechat-gateway"
_HKDF_INFO = b"wechat-gateway session v1"
#: Largest value ``encode``/``seal`` produce: 4096 minus room for name and attributes.
_MAX_SEALED_CHARS = 3800
#: Longer input is not a cookie this codec wrote; refused before any decoding.
_MAX_TOKEN_CHARS = 4096
#: The session payload's version, its first element (version 1 had none).
_PAYLOAD_VERSION = 2
#: A WeCom member's payload: version 2's fields, then userid, departments, scope.
_WECOM_PAYLOAD_VERSION = 3
_V1_FIELDS = 8
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_JSON_DECODER = json.JSONDecoder()
_OPENED_CACHE = 4096


class SessionTooLarge(ValueError):
    """A sealed value would exceed the cookie size budget, and browsers would drop it."""

    def __init__(self, size: int, limit: int = _MAX_SEALED_CHARS) -> None:
        super().__init__(f"sealed value is {size} characters, over the limit of {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in user, as carried in the session cookie."""

    openid: str
    #: The app that issued :attr:`openid`; openids differ per app.
    app_id: str
    unionid: str | None
    nickname: str
    avatar: str
    #: Unix seconds, when the login happened.
    issued_at: int
    #: Unix seconds; sealed in the cookie and enforced on every read.
    expires_at: int
    #: Kept for revalidation with WeChat. Secret: never in repr or logs.
    refresh_token: str | None = field(default=None, repr=False)
    #: Unix seconds, the last time the provider confirmed the authorization.
    validated_at: int | None = None
    #: The identity provider that signed the user in (``IdentityProvider.name``).
    provider: str = "wechat"
    #: This sign-in's id: what a store indexes and revokes ("" for a version-1 cookie).
    sid: str = ""
    #: A WeCom member's userid, in the case WeCom gave it (None for everyone else).
    userid: str | None = None
    #: A WeCom member's departments, in WeCom's order.
    departments: tuple[int, ...] = ()
    #: Those departments and every department above them: what ``wecom-dept:ID`` matches.
    dept_scope: tuple[int, ...] = ()

    @property
    def corp_id(self) -> str | None:
        """The WeCom corp a ``wecom`` session belongs to (its ``app_id``)."""
        return self.app_id if self.provider == "wecom" else None

    @property
    def subject(self) -> str:
        """Who this is, as the assertion's ``sub`` names them: ``wecom:USERID`` for a WeCom
        member, else the openid."""
        return f"wecom:{self.userid}" if self.userid else self.openid

    @property
    def user_key(self) -> str:
        """The user as stores index and revoke them: ``subject`` with the userid
        lower-cased, since WeCom compares userids case-insensitively."""
        return f"wecom:{self.userid.lower()}" if self.userid else self.openid

    def is_expired(self, now: float) -> bool:
        """Whether the session is over at unix time ``now``."""
        return now >= self.expires_at

    def seconds_left(self, now: float) -> int:
        """Whole seconds until expiry at unix time ``now``, for the cookie's ``Max-Age``."""
        return max(0, self.expires_at - int(now))


def _derive(secret: str) -> tuple[bytes, AESGCM]:
    material = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_SIZE + _KEY_ID_SIZE,
        salt=_HKDF_SALT,
        info=_HKDF_INFO,
    ).derive(secret.encode("utf-8", "surrogatepass"))
    return material[_KEY_SIZE:], AESGCM(material[:_KEY_SIZE])


def _check_secret(secret: str, name: str) -> None:
    if not isinstance(secret, str) or len(secret) < _MIN_SECRET_CHARS:
        raise ValueError(f"{name}: must be a string of at least {_MIN_SECRET_CHARS} characters")


def _is_session_fields(fields: Any) -> bool:
    """Whether ``fields`` is a session's JSON list after its version, provider and id (or
    the whole of a version-1 payload), types included."""
    if type(fields) is not list or len(fields) != _V1_FIELDS:
        return False
    openid, app_id, unionid, nickname, avatar, issued_at, refresh_token, validated_at = fields
    return (
        type(openid) is str
        and type(app_id) is str
        and (unionid is None or type(unionid) is str)
        and type(nickname) is str
        and type(avatar) is str
        and type(issued_at) is int
        and (refresh_token is None or type(refresh_token) is str)
        and (validated_at is None or type(validated_at) is int)
    )


class SessionCodec:
    """Seal sessions and other values into cookie-safe tokens and open them again.

    :param secret: the current secret (``session.secret``), at least 32 characters. New
        tokens are always sealed with the key derived from it.
    :param previous_secrets: retired secrets whose tokens are still read.
    :param clock: current unix time; injectable for tests.
    """

    __slots__ = ("_clock", "_current", "_current_id", "_keys")

    def __init__(
        self,
        secret: str,
        previous_secrets: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_secret(secret, "session.secret")
        if isinstance(previous_secrets, str):
            raise TypeError("session.previous_secrets: must be a list of strings, not a string")
        for index, previous in enumerate(previous_secrets):
            _check_secret(previous, f"session.previous_secrets[{index}]")
        self._clock = clock
        self._current_id, self._current = _derive(secret)
        self._keys = {self._current_id: self._current}
        for previous in previous_secrets:
            # A repeated secret maps to the same id; the current key always wins.
            self._keys.setdefault(*_derive(previous))

    @property
    def key_id(self) -> bytes:
        """The current key's 4-byte fingerprint (not secret: every token carries it)."""
        return self._current_id

    def encode(self, session: Session) -> str:
        """Seal ``session`` into a cookie value that expires at ``session.expires_at``.

        :raises SessionTooLarge: the value would not fit in a cookie.
        :raises TypeError: a field does not have its annotated type.
        :raises ValueError: ``expires_at`` is not representable (negative or huge).
        """
        fields = [
            _PAYLOAD_VERSION,
            session.provider,
            session.sid,
            session.openid,
            session.app_id,
            session.unionid,
            session.nickname,
            session.avatar,
            session.issued_at,
            session.refresh_token,
            session.validated_at,
        ]
        if (
            not _is_session_fields(fields[3:])
            or type(session.provider) is not str
            or type(session.sid) is not str
            or type(session.expires_at) is not int
        ):
            raise TypeError("session fields must have their annotated types")
        if session.userid is not None or session.departments or session.dept_scope:
            fields[0] = _WECOM_PAYLOAD_VERSION
            fields += [session.userid, list(session.departments), list(session.dept_scope)]
            if not _is_wecom_fields(fields[11:]):
                raise TypeError("session fields must have their annotated types")
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        return self._seal(
            payload.encode("utf-8", "surrogatepass"), SESSION_PURPOSE, session.expires_at
        )

    def decode(self, value: str | None) -> Session | None:
        """The session in cookie ``value``, or ``None`` if there is no valid one.

        Never raises: anything but a valid, unexpired session sealed by one of this
        codec's keys is ``None``.
        """
        opened = self._open(value, SESSION_PURPOSE)
        return None if opened is None else _parse_session(opened[0], opened[1])

    def decode_with_meta(self, value: str | None) -> tuple[Session, bool] | None:
        """Like :meth:`decode`, also telling whether to re-issue the cookie.

        The flag is true when the cookie was sealed with a previous secret: the caller
        should set ``encode(session)`` again so the old secret can be retired.
        """
        opened = self._open(value, SESSION_PURPOSE)
        if opened is None:
            return None
        session = _parse_session(opened[0], opened[1])
        return None if session is None else (session, opened[2])

    def seal(self, payload: bytes, *, purpose: bytes, ttl: int) -> str:
        """Encrypt ``payload`` for ``purpose``, readable for ``ttl`` seconds.

        :raises SessionTooLarge: the token would not fit in a cookie.
        :raises ValueError: ``ttl`` is not positive.
        """
        if ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        return self._seal(payload, purpose, int(self._clock()) + ttl)

    def unseal(self, token: str | None, *, purpose: bytes) -> bytes | None:
        """The payload of a :meth:`seal` token for ``purpose``, or ``None``. Never raises."""
        opened = self._open(token, purpose)
        return None if opened is None else opened[1]

    def _seal(self, payload: bytes, purpose: bytes, expires_at: int) -> str:
        if not 0 <= expires_at < 1 << 64:
            raise ValueError("expires_at must be a unix time in seconds")
        header = _VERSION_BYTE + self._current_id
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._current.encrypt(nonce, _EXPIRY.pack(expires_at) + payload, header + purpose)
        token = _b64encode(header + nonce + sealed)
        if len(token) > _MAX_SEALED_CHARS:
            raise SessionTooLarge(len(token))
        return token.decode("ascii")

    def _open(self, token: str | None, purpose: bytes) -> tuple[int, bytes, bool] | None:
        """Expiry, payload and "sealed with an old key" of a valid token, else ``None``."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        data = token.encode("ascii")
        try:
            raw = binascii.a2b_base64(
                data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4), strict_mode=True
            )
        except binascii.Error:
            return None
        # Base64 decoding ignores the unused low bits of the last character and reads
        # "+/" like "-_"; only the one canonical spelling of a token is accepted, so that
        # every changed character is a rejected token.
        if len(raw) < _MIN_TOKEN_BYTES or raw[0] != _VERSION or _b64encode(raw) != data:
            return None
        key = self._keys.get(raw[1:_HEADER_SIZE])
        if key is None:
            return None
        try:
            plaintext = key.decrypt(
                raw[_HEADER_SIZE:_PREFIX_SIZE], raw[_PREFIX_SIZE:], raw[:_HEADER_SIZE] + purpose
            )
        except InvalidTag:
            return None
        (expires_at,) = _EXPIRY.unpack_from(plaintext)
        if self._clock() >= expires_at:
            return None
        return expires_at, plaintext[_EXPIRY.size :], key is not self._current


def _b64encode(raw: bytes) -> bytes:
    """Base64url without padding."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def _parse_session(expires_at: int, payload: bytes) -> Session | None:
    # The payload is authentic, but ``seal`` can put any bytes under the session purpose.
    try:
        text = payload.decode("utf-8", "surrogatepass")
        # raw_decode skips json.loads' type dispatch and whitespace regex: ~1 µs.
        fields, end = _JSON_DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text) or type(fields) is not list:
        return None
    provider, sid = "wechat", ""
    wecom: list[Any] = [None, [], []]
    if fields and type(fields[0]) is int:
        if (
            fields[0] not in (_PAYLOAD_VERSION, _WECOM_PAYLOAD_VERSION)
            or len(fields) < 3
            or type(fields[1]) is not str
            or type(fields[2]) is not str
        ):
            return None
        if fields[0] == _WECOM_PAYLOAD_VERSION:
            wecom = fields[-3:]
            if len(fields) != 3 + _V1_FIELDS + 3 or not _is_wecom_fields(wecom):
                return None
            fields = fields[:-3]
        provider, sid, fields = fields[1], fields[2], fields[3:]
    if not _is_session_fields(fields):
        return None
    openid, app_id, unionid, nickname, avatar, issued_at, refresh_token, validated_at = fields
    return Session(
        openid,
        app_id,
        unionid,
        nickname,
        avatar,
        issued_at,
        expires_at,
        refresh_token,
        validated_at,
        provider,
        sid,
        wecom[0],
        tuple(wecom[1]),
        tuple(wecom[2]),
    )


def _is_wecom_fields(fields: list[Any]) -> bool:
    """Whether ``fields`` is a version-3 payload's tail: userid, departments, scope."""
    userid, departments, scope = fields
    return (
        (userid is None or type(userid) is str)
        and type(departments) is list
        and type(scope) is list
        and all(type(d) is int for d in departments)
        and all(type(d) is int for d in scope)
    )


class CookieSessionStore:
    """A ``SessionStore`` that keeps the whole session in the browser's cookie.

    ``load`` reads the session a request carries (``None`` for none or an invalid one);
    ``save`` and ``clear`` give the ``Set-Cookie`` header that writes or removes it.

    A browser sends the same cookie on every request, so each worker remembers the last
    few thousand cookies it opened (only ones that opened: a forged value is never a key)
    and skips the cryptography for them; the sealed expiry is still checked every time.
    """

    __slots__ = ("_opened", "app_ids", "clock", "codec", "cookie")

    def __init__(
        self,
        codec: SessionCodec,
        cookie: CookieSpec,
        *,
        clock: Callable[[], float] = time.time,
        app_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.codec = codec
        self.cookie = cookie
        self.clock = clock
        #: The app ids this gateway signs in with; a session from another app (sealed with
        #: a shared secret) is no session here: its openid names someone else there.
        self.app_ids = app_ids
        self._opened: dict[str, tuple[Session, bool]] = {}

    def load(self, environ: WSGIEnvironment) -> tuple[Session, bool] | None:
        """The request's session and whether to re-issue it (it was read with an old key)."""
        for value in request_cookies(environ, self.cookie.name):
            found = self._opened.get(value)
            if found is None:
                found = self.codec.decode_with_meta(value)
                if found is None or (self.app_ids and found[0].app_id not in self.app_ids):
                    continue
                if len(self._opened) >= _OPENED_CACHE:
                    self._opened.clear()  # plain dict operations stay safe across threads
                self._opened[value] = found
            elif found[0].is_expired(self.clock()):
                continue
            return found
        return None

    def save(
        self, environ: WSGIEnvironment, session: Session, *, new: bool = False
    ) -> tuple[str, str]:
        return self.cookie.set(self.codec.encode(session), session.seconds_left(self.clock()))

    def clear(self, environ: WSGIEnvironment, *, everywhere: bool = False) -> tuple[str, str]:
        """Only this browser's cookie: with nothing on the server, a copy stays valid until
        it expires (``RevocableSessionStore`` adds the revocation)."""
        return self.cookie.clear()

    def forget(self, predicate: Callable[[Session], bool] | None = None) -> None:
        if predicate is None:
            self._opened.clear()
            return
        for value, (session, _) in list(self._opened.items()):
            if predicate(session):
                self._opened.pop(value, None)
