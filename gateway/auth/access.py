"""Who may reach what: allow lists, public paths, API paths, CORS preflights, front proxies.

``access.allow`` lists openids, unionids and groups (``group:NAME``, see
``gateway.identity.groups``), and ``access.allow_file`` more of them, one per line (``#``
comments); with neither, any WeChat user is allowed. The file is re-read when it
changes, without a restart, by every worker (each checks it at most once a second). A file
that cannot be read allows nobody until it can: an allow list fails closed.
``upstreams[].allow`` replaces the global list for one upstream.

``access.public`` entries are path prefixes (``/static/``), optionally with a method
(``GET /static/``), or regular expressions (``~^/api/v1/public/``). A public-path match
must never be fooled by a spelling of a protected path that the upstream would resolve
elsewhere (``/static/../admin``), so a path is public only if a rule matches both its
most aggressive reading and its plain one (see ``gateway.paths``); a path whose readings
disagree, or that cannot be read at all, is refused with 400. Prefixes match whole
segments: ``/health`` covers ``/health`` and ``/health/x``, not ``/healthz-admin``.

A CORS preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) passes
without login unless ``access.allow_preflight`` is off; one with a body is no preflight.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.errors import BadRequest
from gateway.http.paths import plain_path, policy_path
from gateway.identity.groups import Groups, member_key, session_keys

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import Session
    from gateway.config import AccessSettings

log = logging.getLogger("gateway.access")

_RECHECK = 1.0

#: The methods a public rule may name: the IANA HTTP Method Registry (RFC 9110's, PATCH,
#: WebDAV's and CalDAV's, for apps such as Radicale). A tuple, so that the suggestion for a
#: misspelt one does not depend on hash order.
_HTTP_METHODS: Final = tuple(
    """GET HEAD POST PUT DELETE PATCH OPTIONS TRACE CONNECT QUERY PROPFIND PROPPATCH MKCOL
    COPY MOVE LOCK UNLOCK REPORT SEARCH MKCALENDAR ACL BIND UNBIND REBIND LINK UNLINK
    ORDERPATCH MKREDIRECTREF UPDATEREDIRECTREF CHECKIN CHECKOUT UNCHECKOUT VERSION-CONTROL
    BASELINE-CONTROL LABEL MERGE MKACTIVITY MKWORKSPACE UPDATE""".split()  # noqa: SIM905 - a registry, read as words
)
#: Words people write for "any method": the rule without a method means that.
_ANY_METHOD: Final = frozenset({"*", "ALL", "ANY"})
#: Where the rule proper starts: the first ``/`` or ``~`` that begins a word.
_RULE_START: Final = re.compile(r"(?:^|(?<=\s))[/~]")
_METHOD_SEPARATORS: Final = re.compile(r"[\s,|/+]+")


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
        return _under(path, prefix)


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, by whole segments."""
    return path.startswith(prefix) and (
        prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"
    )


def parse_public_rule(entry: str) -> _PublicRule:
    """``/prefix``, ``METHOD /prefix`` or ``[METHOD ]~regex``; ValueError if malformed.

    The method is matched in any case (``get`` is ``GET``) and must be one HTTP defines; a
    prefix is one path, without whitespace. Messages never repeat the entry (a config
    message names keys, not values), but do suggest the method that was probably meant.
    """
    text = entry.strip()
    start = _RULE_START.search(text)
    if start is None:
        raise ValueError("must be a path starting with /, or ~ and a regular expression")
    head, text = text[: start.start()], text[start.start() :]
    method = _method(head) if head else None
    if text.startswith("~"):
        try:
            return _PublicRule(method, None, re.compile(text[1:]))
        except re.error as exc:
            raise ValueError(f"invalid regular expression ({exc.msg})") from None
    if any(char.isspace() for char in text):
        raise ValueError(
            "a path cannot contain spaces: one path per rule (a path with a space in it is"
            " matched with ~ and a regular expression)"
        )
    return _PublicRule(method, text, None)


def _method(head: str) -> str:
    """The rule's method, upper-cased; ValueError naming the method probably meant."""
    words = [word for word in _METHOD_SEPARATORS.split(head.upper()) if word]
    if len(words) > 1:
        if all(word in _HTTP_METHODS for word in words):
            raise ValueError("one method per rule: write a rule for each method")
        raise ValueError("must be a path starting with /, or ~ and a regular expression")
    method = words[0]
    if method in _HTTP_METHODS:
        return method
    if method in _ANY_METHOD:
        raise ValueError("to match every method, leave the method out")
    close = difflib.get_close_matches(method, _HTTP_METHODS, n=1)
    if close:
        raise ValueError(f"not an HTTP method: did you mean {close[0]}?")
    raise ValueError("not an HTTP method: the method must be one such as GET or POST")


def parse_allow_file(text: str) -> frozenset[str]:
    """One id per line; blank lines and ``#`` comments (whole-line or trailing) ignored."""
    ids = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.add(entry)
    return frozenset(ids)


def _split_groups(entries: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``group:NAME`` entries apart from the ids: (ids in their lookup form, group names)."""
    names = frozenset(entry[6:] for entry in entries if entry.startswith("group:"))
    ids = frozenset(_lookup_form(entry) for entry in entries if not entry.startswith("group:"))
    return ids, names


def _lookup_form(entry: str) -> str:
    """``wecom:USERID`` lower-cased and ``wecom-dept:ID`` as a plain number, the forms a
    session's keys take (``session_keys``); anything else as it is."""
    try:
        return member_key(entry) if entry.startswith(("wecom:", "wecom-dept:")) else entry
    except ValueError:
        return entry  # matches nobody: no session has that key


class AllowList:
    """Allowed openids/unionids and groups (``group:NAME``): fixed ones, plus a file watched
    for changes."""

    def __init__(
        self, ids: Iterable[str], path: str | None = None, groups: Groups | None = None
    ) -> None:
        self.ids, self.group_names = _split_groups(frozenset(ids))
        self.groups = groups
        self.path = path
        self._file_ids: frozenset[str] = frozenset()
        self._file_groups: frozenset[str] = frozenset()
        self._signature: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._failing = False
        if path is not None:
            self._reload()

    @property
    def restricted(self) -> bool:
        return bool(self.ids) or bool(self.group_names) or self.path is not None

    def allows(self, session: Session) -> bool:
        if not self.restricted:
            return True
        if self.path is not None and time.monotonic() - self._checked >= _RECHECK:
            self._reload()
        for identity in session_keys(session):
            if identity in self.ids or identity in self._file_ids:
                return True
        if self.groups is not None and (self.group_names or self._file_groups):
            for name in self.groups.of(session):
                if name in self.group_names or name in self._file_groups:
                    return True
        return False

    def _reload(self) -> None:
        assert self.path is not None
        self._checked = time.monotonic()
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if signature == self._signature:
                return
            with open(self.path, encoding="utf-8") as file:
                self._file_ids, self._file_groups = _split_groups(parse_allow_file(file.read()))
            self._signature = signature
            self._failing = False
            log.info("allow file %s: %d ids", self.path, len(self._file_ids))
        except (OSError, UnicodeDecodeError) as exc:
            if not self._failing:
                log.error("allow file %s unreadable, it allows no one: %s", self.path, exc)
            self._failing = True
            self._file_ids = self._file_groups = frozenset()
            self._signature = None


class TrustedProxies:
    """The front proxies whose ``X-Original-URI`` / ``X-Forwarded-*`` claims are believed."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, environ: WSGIEnvironment) -> bool:
        if not self.networks:
            return False
        return self._trusted(environ.get("REMOTE_ADDR", ""))

    def _trusted(self, text: str) -> bool:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            return False
        # A dual-stack listener ([::]) sees IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client(self, environ: WSGIEnvironment) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy; then the
        last ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further
        left were written by whoever the client is, and prove nothing)."""
        peer = str(environ.get("REMOTE_ADDR", ""))
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if not forwarded or not self.networks or not self._trusted(peer):
            return peer
        for entry in reversed(forwarded.split(",")):
            entry = entry.strip()
            if not entry:
                continue
            if not self._trusted(entry):
                try:
                    return str(ipaddress.ip_address(entry))
                except ValueError:
                    return peer  # not an address: believe nothing further
        return peer


class AccessPolicy:
    def __init__(self, settings: AccessSettings) -> None:
        self.groups = Groups(settings.groups, settings.groups_file)
        self.allow_list = AllowList(settings.allow, settings.allow_file, self.groups)
        self.public = tuple(parse_public_rule(entry) for entry in settings.public)
        self.api_paths = settings.api_paths
        self.allow_preflight = settings.allow_preflight
        self.trusted_proxies = TrustedProxies(settings.trusted_proxies)

    def allows(self, session: Session, upstream_allow: AllowList | None = None) -> bool:
        return (upstream_allow or self.allow_list).allows(session)

    def is_public(self, method: str, raw_path: str) -> bool:
        """Whether the rules make this path public under every reading of it.

        Raises BadRequest when the readings disagree (``/static/../admin`` is public as
        written and ``/admin`` once resolved): such a path is refused, not guessed at.
        """
        if not self.public:
            return False
        aggressive = any(rule.matches(method, policy_path(raw_path)) for rule in self.public)
        plain = any(rule.matches(method, plain_path(raw_path)) for rule in self.public)
        if aggressive != plain:
            raise BadRequest("the path is ambiguous: it reads differently once resolved")
        return aggressive

    def is_api_path(self, raw_path: str) -> bool:
        """``access.api_paths``: prefixes that get 401 JSON, never a login redirect."""
        if not self.api_paths:
            return False
        try:
            path = policy_path(raw_path)
        except BadRequest:
            return False  # refused elsewhere; for the answer's format it is not an API path
        return any(_under(path, prefix) for prefix in self.api_paths)

    def is_preflight(self, environ: WSGIEnvironment) -> bool:
        """A CORS preflight, passed to the upstream without login unless configured off.

        Browsers send preflights without a body, so an ``OPTIONS`` that has one is not a
        preflight, however it is dressed: it would carry data to the app without login.
        """
        return (
            self.allow_preflight
            and environ.get("REQUEST_METHOD") == "OPTIONS"
            and "HTTP_ORIGIN" in environ
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
            and not _has_body(environ)
        )


def _has_body(environ: WSGIEnvironment) -> bool:
    """Whether the request may carry a body: any ``Transfer-Encoding`` (even an empty chunked
    body: the framing is the claim), or a ``Content-Length`` that is not plainly zero."""
    if "HTTP_TRANSFER_ENCODING" in environ:
        return True
    length: str = environ.get("CONTENT_LENGTH", "")
    return length.strip("0") != ""
