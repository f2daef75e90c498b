"""Time ``X-WeChat-Assertion``: signing it, reusing it, verifying it.

``python bench/assertion.py`` prints microseconds per call (the median over several runs) as
a Markdown table; ``bench/run.py`` calls ``measure`` in its own process and folds the table
into the report next to the HTTP contenders with assertions on and off.

- **sign**: ``gateway.identity.assertion.AssertionSigner`` with a fresh
  ``gateway.identity.keys.FileKeys`` (a P-256 key generated for the run, in a PEM file), its
  cache bypassed: its clock moves on by the assertion's lifetime at every call, so every call
  signs anew, as the first request of a session (or the first after a reuse ran out) does.
- **sign, PyJWT alone**: ``jwt.encode`` with the same claims, key and header, no signer.
- **reuse**: the signer answering from its cache, what every other request of a session pays.
- **verify**: ``jwt.decode`` of one such assertion with ES256 pinned and ``iss``, ``aud`` and
  ``exp`` checked, what an app that verifies pays per request (its JWKS already fetched).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cryptography
import jwt
import report
from apps import bench_session
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.session import Session
from gateway.identity.assertion import LIFETIME, AssertionSigner, assertion_claims
from gateway.identity.keys import FileKeys

_ISSUER = "https://gateway.bench.example"
_AUDIENCE = _ISSUER
_GROUPS: tuple[str, ...] = ()


@contextlib.contextmanager
def _fresh_file_keys() -> Iterator[FileKeys]:
    """``FileKeys`` over a P-256 key generated now, written to a PEM file for the purpose."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory(prefix="wechat-gateway-bench-key-") as tmp:
        path = Path(tmp) / "signing.pem"
        path.write_bytes(pem)
        os.chmod(path, 0o600)
        yield FileKeys([str(path)])


def _session() -> Session:
    return bench_session(sid="bench-sid-0123456789abcdef")


def _microseconds(call: Callable[[], object], repeat: int, min_seconds: float) -> float:
    """Median over ``repeat`` runs, each long enough to last about ``min_seconds``."""
    timer = timeit.Timer(call)
    number, taken = 1, 0.0
    while taken < min_seconds:
        number *= 2
        taken = timer.timeit(number)
    number = max(1, round(number * min_seconds / taken))
    return statistics.median(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def measure(repeat: int = 7, min_seconds: float = 0.2) -> dict[str, Any]:
    """``{"about": str, "cases": [{"operation": str, "us_per_call": float}, ...]}``."""
    session = _session()
    with _fresh_file_keys() as keys:
        signing = keys.current()
        # The signer's cache is bypassed by its clock: one lifetime later at every call,
        # each call finds its previous assertion too old and signs a new one.
        ticks = [time.time()]

        def moving_clock() -> float:
            ticks[0] += LIFETIME
            return ticks[0]

        fresh = AssertionSigner(keys, issuer=_ISSUER, clock=moving_clock)
        reusing = AssertionSigner(keys, issuer=_ISSUER)
        claims = assertion_claims(
            session, issuer=_ISSUER, audience=_AUDIENCE, groups=_GROUPS, now=int(time.time())
        )
        token = reusing(session, _AUDIENCE, _GROUPS)
        public = signing.private.public_key()

        def verify() -> dict[str, Any]:
            return jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=_AUDIENCE,
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )

        # Every case does what it claims before it is timed.
        first, second = fresh(session, _AUDIENCE, _GROUPS), fresh(session, _AUDIENCE, _GROUPS)
        if first == second:
            raise RuntimeError("the signer's cache was not bypassed")
        if reusing(session, _AUDIENCE, _GROUPS) is not token:
            raise RuntimeError("the signer did not reuse its assertion")
        if jwt.get_unverified_header(token) != {"alg": "ES256", "kid": signing.kid, "typ": "JWT"}:
            raise RuntimeError(f"unexpected header {jwt.get_unverified_header(token)}")
        if verify()["sub"] != session.openid:
            raise RuntimeError("the assertion did not verify")

        cases: list[tuple[str, Callable[[], object]]] = [
            (
                "sign: `AssertionSigner`, cache bypassed (a new ES256 signature every call)",
                lambda: fresh(session, _AUDIENCE, _GROUPS),
            ),
            (
                "sign: `jwt.encode` alone, same claims, key and `kid`",
                lambda: jwt.encode(
                    claims, signing.private, algorithm="ES256", headers={"kid": signing.kid}
                ),
            ),
            (
                "reuse: `AssertionSigner` answering from its cache (a session's other requests)",
                lambda: reusing(session, _AUDIENCE, _GROUPS),
            ),
            (
                "verify: `jwt.decode`, ES256 pinned, `iss`, `aud` and `exp` checked",
                verify,
            ),
        ]
        results = [
            {"operation": name, "us_per_call": _microseconds(call, repeat, min_seconds)}
            for name, call in cases
        ]
    about = (
        f"Python {platform.python_version()}, PyJWT {jwt.__version__}, "
        f"cryptography {cryptography.__version__}, {backend.openssl_version_text()}, "
        f"{platform.machine()}; assertion {len(token)} characters; median of {repeat} runs "
        f"of about {min_seconds:g} s each, in the benchmark's own process."
    )
    return {"about": about, "cases": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs; the median is reported")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one run")
    args = parser.parse_args()
    print(report.assertion_table(measure(args.repeat, args.seconds)))


if __name__ == "__main__":
    main()
