"""Who may reach what: the allow list and the paths served without login.

``access.allow`` lists openids and unionids; empty means any WeChat user. ``access.public``
entries are path prefixes (``/static/``), optionally with a method (``GET /static/``), or
regular expressions (``~^/api/v1/public/``).

A public-path match must never be fooled by a spelling of a protected path that the
upstream would resolve elsewhere (``/static/../admin``). Paths are therefore matched in
their decoded form, and any path whose meaning could differ between the gateway and the
upstream (dot segments, encoded slashes, backslashes, empty segments, ``;`` parameters,
an encoded ``%`` that a second decoding would turn into any of these) is simply not
public: it needs a session like everything else. That fails closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateway.session import Session

_AMBIGUOUS = re.compile(r"%2[fF]|%5[cC]|%2[eE]|%25|%00|\\|;|//|/\.\.?(?:/|$)")


@dataclass(frozen=True, slots=True)
class _PublicRule:
    method: str | None
    prefix: str | None
    pattern: re.Pattern[str] | None

    def matches(self, method: str, path: str) -> bool:
        if self.method not in (None, method) and (self.method, method) != ("GET", "HEAD"):
            return False
        if self.pattern is not None:
            return self.pattern.search(path) is not None
        prefix = self.prefix
        assert prefix is not None
        # "/health" covers "/health" and "/health/...", not "/healthz-admin".
        return path.startswith(prefix) and (
            prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"
        )


def parse_public_rule(entry: str) -> _PublicRule:
    """``/prefix``, ``METHOD /prefix`` or ``[METHOD ]~regex``; ValueError if malformed."""
    entry = entry.strip()
    # A rule that starts with the path or the regex has no method, even if a space follows.
    word, _, rest = ("", "", entry) if entry[:1] in ("/", "~") else entry.partition(" ")
    if word and not word.isalpha():
        raise ValueError("the method must be a word such as GET")
    method = word.upper() or None
    rest = rest.strip()
    if rest.startswith("~"):
        try:
            return _PublicRule(method, None, re.compile(rest[1:]))
        except re.error as exc:
            raise ValueError(f"invalid regular expression ({exc.msg})") from None
    if not rest.startswith("/"):
        raise ValueError("must be a path starting with /, or ~ and a regular expression")
    return _PublicRule(method, rest, None)


class AccessPolicy:
    def __init__(self, allow: Iterable[str], public: Iterable[str]) -> None:
        self.allow = frozenset(allow)
        self.public = tuple(parse_public_rule(entry) for entry in public)

    def allows(self, session: Session) -> bool:
        if not self.allow:
            return True
        return session.openid in self.allow or (
            session.unionid is not None and session.unionid in self.allow
        )

    def is_public(self, method: str, raw_path: str) -> bool:
        if not self.public or _AMBIGUOUS.search(raw_path):
            return False
        path = unquote(raw_path)
        return any(rule.matches(method, path) for rule in self.public)
