"""Groups: names for sets of users, usable in allow lists and sent to the app.

``access.groups`` maps a group name to its members, and ``access.groups_file`` (a YAML file
of the same shape) adds more; a member is an openid or unionid, ``wecom:USERID`` (a WeCom
member, compared case-insensitively as WeCom compares userids) or ``wecom-dept:ID`` (the
members of a WeCom department). A name may appear in both: its members are the union.

The file is re-read, by every worker, within a second of a change. A file that cannot be
read or parsed, or names a member in an unknown form, is not taken: the last good version
stays in force and the problem is logged once per change of the file. Group changes apply to
the next request of every session, sessions already open included (nothing about groups is
kept in the cookie).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from gateway.auth.session import Session

log = logging.getLogger("gateway.access")

_RECHECK = 1.0
_CACHE_LIMIT = 65536
#: openids and unionids are URL-safe tokens (28 characters today).
_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: WeCom userids: 1 to 64 of letters, digits and ``_-@.``.
_WECOM_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_DEPARTMENT = re.compile(r"[0-9]{1,18}")
_GROUP_NAME = re.compile(r"[^\x00-\x1f\x7f,]{1,64}")


def member_key(entry: str) -> str:
    """The form a member is looked up by: an id as it is, ``wecom:userid`` lower-cased,
    ``wecom-dept:ID``. ``ValueError`` naming the forms for anything else."""
    entry = entry.strip()
    kind, colon, rest = entry.partition(":")
    if not colon:
        if _USER_ID.fullmatch(entry):
            return entry
    elif kind == "wecom" and _WECOM_USER.fullmatch(rest):
        return f"wecom:{rest.lower()}"
    elif kind == "wecom-dept" and _DEPARTMENT.fullmatch(rest):
        return f"wecom-dept:{int(rest)}"
    raise ValueError(
        f"{entry[:80]!r} is not a member: use an openid or unionid, wecom:USERID or wecom-dept:ID"
    )


def check_group_name(name: object) -> str:
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise ValueError("a group name is 1 to 64 characters, no commas or control characters")
    return name


def parse_groups(raw: Any, where: str) -> dict[str, frozenset[str]]:
    """``{name: [members]}`` checked, members in their lookup form. ``ValueError`` lists every
    problem, each starting with ``where``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a mapping of group name to a list of members")
    groups: dict[str, frozenset[str]] = {}
    problems: list[str] = []
    for name, members in raw.items():
        try:
            check_group_name(name)
        except ValueError as exc:
            problems.append(f"{where}: {str(name)[:80]!r}: {exc}")
            continue
        if members is None:
            members = []
        if not isinstance(members, list):
            problems.append(f"{where}.{name}: must be a list of members")
            continue
        keys = set()
        for i, member in enumerate(members):
            if isinstance(member, bool) or not isinstance(member, str | int):
                problems.append(f"{where}.{name}[{i}]: must be a string")
                continue
            try:
                keys.add(member_key(str(member)))
            except ValueError as exc:
                problems.append(f"{where}.{name}[{i}]: {exc}")
        groups[name] = frozenset(keys)
    if problems:
        raise ValueError("\n".join(problems))
    return groups


def read_groups_file(path: str) -> dict[str, frozenset[str]]:
    """The groups of a groups file; ``ValueError`` (or ``OSError``) says what is wrong."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{where}") from None
    return parse_groups(raw, path)


def session_keys(session: Session) -> tuple[str, ...]:
    """The member keys a session's user is known by."""
    if session.userid:
        return (session.user_key, *(f"wecom-dept:{d}" for d in session.dept_scope))
    keys = [session.openid] if session.openid else []
    if session.unionid:
        keys.append(session.unionid)
    return tuple(keys)


class Groups:
    """The configured groups and the watched groups file; which groups a session is in."""

    def __init__(
        self,
        groups: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]] = (),
        path: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pairs = groups.items() if hasattr(groups, "items") else groups
        self._static = {name: frozenset(member_key(m) for m in members) for name, members in pairs}
        self.path = path
        self._clock = clock
        self._from_file: dict[str, frozenset[str]] = {}
        self._signature: tuple[int, int, int] | None = None
        self._refused: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._index: dict[str, tuple[str, ...]] = {}
        self._cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._rebuild()
        if path is not None:
            self._reload()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._static) | frozenset(self._from_file)

    def of(self, session: Session) -> tuple[str, ...]:
        """The names of the groups the session's user is in, sorted; often empty."""
        if self.path is not None and self._clock() - self._checked >= _RECHECK:
            self._reload()
        if not self._index:
            return ()
        keys = session_keys(session)
        found = self._cache.get(keys)
        if found is None:
            names: set[str] = set()
            for key in keys:
                names.update(self._index.get(key, ()))
            found = tuple(sorted(names))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[keys] = found
        return found

    def _rebuild(self) -> None:
        index: dict[str, set[str]] = {}
        for source in (self._static, self._from_file):
            for name, members in source.items():
                for key in members:
                    index.setdefault(key, set()).add(name)
        self._index = {key: tuple(sorted(names)) for key, names in index.items()}
        self._cache = {}

    def _reload(self) -> None:
        assert self.path is not None
        self._checked = self._clock()
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self._refuse(None, f"unreadable ({exc.strerror or exc})")
            return
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature in (self._signature, self._refused):
            return
        try:
            groups = read_groups_file(self.path)
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(signature, f"unreadable ({exc})")
            return
        except ValueError as exc:
            self._refuse(signature, str(exc))
            return
        self._from_file = groups
        self._signature = signature
        self._refused = None
        self._rebuild()
        log.info("groups file %s: %d groups", self.path, len(groups))

    def _refuse(self, signature: tuple[int, int, int] | None, why: str) -> None:
        """Keep the last good groups; say why once per version of the file."""
        if signature is None and self._refused == (-1, -1, -1):
            return
        self._refused = signature if signature is not None else (-1, -1, -1)
        log.error("groups file %s not taken, the last good version stays: %s", self.path, why)
