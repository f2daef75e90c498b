"""Time the session cookie codec: ``python bench/session_codec.py [--number N] [--repeat R]``.

Decoding runs on every proxied request, so its cost is paid everywhere; encoding runs once
per login. Prints microseconds per call (the median over R runs of N calls each) as a
Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

_NOW = 1_700_000_000
_WEEK = 7 * 24 * 3600
_SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuv"
_OLD_SECRET = "bench-old-secret-0123456789abcdefghijklmnopq"


def _microseconds(call: Callable[[], object], number: int, repeat: int) -> float:
    runs = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the median is reported")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    from gateway.auth.session import Session, SessionCodec

    codec = SessionCodec(_SECRET, [_OLD_SECRET], clock=lambda: _NOW)
    session = Session(
        openid="o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
        app_id="wx0123456789abcdef",
        unionid="oTGnpnZ8vDyoa6CQpKdKQtsQs9M0",
        nickname="张三的小号 🐼",
        avatar=(
            "https://thirdwx.qlogo.cn/mmopen/vi_32/"
            "Q0j4TwGTfTLqKic8ZtXqBq4kRb2ia5GnR8iaHvGxLw5fMnA1ZkPj0sYbEibWtCfGm8uQ/132"
        ),
        issued_at=_NOW,
        expires_at=_NOW + _WEEK,
        refresh_token="81_Q2t2hlBv9nK0bHkYx3fLqzJ7aP1cM6dR8sT4uV5wX0yZaB3cD4eF5gH6iJ7kL8mN9",
        validated_at=_NOW,
    )
    token = codec.encode(session)
    old_token = SessionCodec(_OLD_SECRET, clock=lambda: _NOW).encode(session)
    tampered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    expired = codec.encode(dataclasses.replace(session, expires_at=_NOW - 1))
    garbage = "not-a-session-cookie-" * 8
    assert codec.decode(token) == session
    assert codec.decode_with_meta(old_token) == (session, True)
    assert codec.decode(tampered) is codec.decode(expired) is codec.decode(garbage) is None

    cases: list[tuple[str, Callable[[], object]]] = [
        ("encode", lambda: codec.encode(session)),
        ("decode", lambda: codec.decode(token)),
        ("decode, sealed with a previous secret", lambda: codec.decode_with_meta(old_token)),
        ("decode, tampered (fails the GCM tag)", lambda: codec.decode(tampered)),
        ("decode, expired", lambda: codec.decode(expired)),
        ("decode, garbage", lambda: codec.decode(garbage)),
    ]
    print(
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{backend.openssl_version_text()}, {platform.machine()}; "
        f"cookie value {len(token)} characters; "
        f"median of {args.repeat} runs of {args.number:,} calls."
    )
    print()
    print("| operation | µs per call |")
    print("|---|---:|")
    for name, call in cases:
        print(f"| {name} | {_microseconds(call, args.number, args.repeat):.2f} |")


if __name__ == "__main__":
    main()
