"""The keys that sign ``X-WeChat-Assertion``, and the JWKS that publishes them.

Two sources:

- ``FileKeys``: ``identity.signing_keys``, PEM files of EC P-256 private keys (PKCS#8
  ``PRIVATE KEY`` or SEC1 ``EC PRIVATE KEY``, unencrypted). The first signs; every one is
  published, so a key being retired stays listed while its assertions may still be seen.
  Rotate by putting the new key first and dropping the old one a few minutes later.
- ``StoredKeys``: with no files, keys are generated and kept in the state store, so every
  worker of every replica signs with the same key. Time is cut into weeks (``PERIOD``); each
  week has its own key, created by whichever worker needs it first (an add-if-absent in the
  store, so concurrent workers agree on one). The JWKS lists last week's key (its assertions
  expire minutes into the new week), this week's, and next week's, published a week before
  it signs, so a verifier that caches the JWKS never meets an unknown ``kid``. The private
  key is sealed with the session secret before it is stored (AES-256-GCM, as the cookies
  are): reading the store does not let anyone sign.

A key's ``kid`` is its RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from gateway.auth.session import SessionCodec
    from gateway.state.base import StateStore

#: How long a generated key signs: a week.
PERIOD = 7 * 86400
_PURPOSE = b"signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    jwk: dict[str, str]

    @classmethod
    def of(cls, private: ec.EllipticCurvePrivateKey) -> SigningKey:
        numbers = private.public_key().public_numbers()
        x = _b64(numbers.x.to_bytes(32, "big"))
        y = _b64(numbers.y.to_bytes(32, "big"))
        # RFC 7638: the required members, sorted, no whitespace.
        thumbprint = json.dumps(
            {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
        )
        kid = _b64(hashlib.sha256(thumbprint.encode("ascii")).digest())
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        }
        return cls(kid, private, jwk)


def load_key_file(path: str) -> SigningKey:
    """The signing key in a PEM file; ``ValueError`` saying what is wrong with it."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    if b"PRIVATE KEY-----" not in data:
        if b"PUBLIC KEY-----" in data or b"CERTIFICATE-----" in data:
            raise ValueError("holds a public key or certificate; the private key is needed")
        raise ValueError("is not a PEM private key")
    try:
        private = load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; store it unencrypted") from None
    except ValueError as exc:
        raise ValueError(f"is not a readable private key ({exc})") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(
            f"holds a {type(private).__name__.removeprefix('_')}; an EC P-256 key is needed"
        )
    if not isinstance(private.curve, ec.SECP256R1):
        raise ValueError(f"is an EC key on {private.curve.name}; P-256 (prime256v1) is needed")
    return SigningKey.of(private)


def jwks_document(keys: Iterable[SigningKey]) -> bytes:
    return json.dumps({"keys": [key.jwk for key in keys]}, separators=(",", ":")).encode()


class FileKeys:
    """``identity.signing_keys``: the first signs, all are published."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.keys = [load_key_file(path) for path in paths]
        if not self.keys:
            raise ValueError("no signing key files")
        self._jwks = jwks_document(self.keys)

    def current(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> bytes:
        return self._jwks


class StoredKeys:
    """Weekly keys generated once for every replica, sealed in the state store."""

    def __init__(
        self,
        state: StateStore,
        codec: SessionCodec,
        *,
        clock: Callable[[], float] = time.time,
        period: int = PERIOD,
        previous: Iterable[SessionCodec] = (),
    ) -> None:
        self.state = state
        self.codec = codec
        #: Codecs of ``session.previous_secrets``: the keys made under them stay published
        #: (never used to sign) while their assertions may still be in flight.
        self.previous = tuple(previous)
        self.clock = clock
        self.period = period
        self._lock = threading.Lock()
        self._period = -1
        self._current: SigningKey | None = None
        self._jwks = b""
        # Keys of different secrets never mix: a new session.secret starts new keys.
        self._prefix = _prefix(codec)

    def current(self) -> SigningKey:
        """This period's key. Raises ``StoreUnavailable`` when the store cannot be reached
        the first time a period's key is needed (once a week per worker)."""
        period = int(self.clock() // self.period)
        if period != self._period or self._current is None:
            with self._lock:
                if period != self._period or self._current is None:
                    self._load(period)
        assert self._current is not None
        return self._current

    def jwks(self) -> bytes:
        self.current()
        return self._jwks

    def _load(self, period: int) -> None:
        keys = [self._key(period - 1, create=False), self._key(period), self._key(period + 1)]
        current = keys[1]
        assert current is not None
        for codec in self.previous:
            prefix = _prefix(codec)
            for when in (period - 1, period):
                keys.append(self._open(self.state.get(f"{prefix}{when}"), codec))
        seen: set[str] = set()
        published = []
        for key in keys:
            if key is not None and key.kid not in seen:
                seen.add(key.kid)
                published.append(key)
        self._jwks = jwks_document(published)
        self._current = current
        self._period = period

    def _key(self, period: int, *, create: bool = True) -> SigningKey | None:
        name = f"{self._prefix}{period}"
        # Kept while it may be published: its own period, and the ones before and after.
        ttl = 3 * self.period + 3600
        found = self._open(self.state.get(name))
        if found is not None or not create:
            return found
        private = ec.generate_private_key(ec.SECP256R1())
        sealed = self.codec.seal(
            private.private_numbers().private_value.to_bytes(32, "big"), purpose=_PURPOSE, ttl=ttl
        )
        if self.state.add(name, sealed.encode("ascii"), ttl):
            return SigningKey.of(private)
        found = self._open(self.state.get(name))  # another worker was first: its key
        if found is None:
            self.state.put(name, sealed.encode("ascii"), ttl)  # unreadable: replace it
            return SigningKey.of(private)
        return found

    def _open(self, value: bytes | None, codec: SessionCodec | None = None) -> SigningKey | None:
        if value is None:
            return None
        raw = (codec or self.codec).unseal(value.decode("ascii", "replace"), purpose=_PURPOSE)
        if raw is None or len(raw) != 32:
            return None
        private = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        return SigningKey.of(private)


def _prefix(codec: SessionCodec) -> str:
    return "signing-key:" + codec.key_id.hex() + ":"
