"""``wechat-gateway sessions list|revoke``: the state store's index of active sessions, for
operators. Exit 0, or 2 with one clear line when the store cannot be reached."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.audit import Audit
from gateway.server.logs import configure_logging
from gateway.state import open_store
from gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.state.base import SessionRecord, StateStore

EXIT_UNAVAILABLE = 2
_COLUMNS = (
    "sid",
    "openid",
    "unionid",
    "nickname",
    "app_id",
    "signed in at",
    "expires at",
    "client",
    "user agent",
)


def _store(settings: Settings) -> StateStore:
    return open_store(settings.state, session_max_age=settings.session.max_age)


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(record: SessionRecord) -> dict[str, object]:
    return {
        "sid": record.sid,
        "openid": record.subject,
        "user": record.subject,
        "unionid": record.unionid,
        "nickname": record.nickname,
        "app_id": record.app_id,
        "provider": record.provider,
        "signed_in_at": _time(record.signed_in_at),
        "expires_at": _time(record.expires_at),
        "client": record.client,
        "user_agent": record.user_agent,
    }


def user_key(user: str | None) -> str | None:
    """A ``--user`` as the store indexes it: ``wecom:USERID`` lower-cased (WeCom compares
    userids case-insensitively), an openid or unionid as it is."""
    if user is not None and user[:6].lower() == "wecom:":
        return "wecom:" + user[6:].strip().lower()
    return user


def list_sessions(settings: Settings, *, user: str | None, as_json: bool) -> int:
    user = user_key(user)
    store = _store(settings)
    try:
        records = store.sessions(user)
    except StoreUnavailable as exc:
        print(f"state store unreachable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        store.close()
    rows = [_row(record) for record in records]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no active sessions")
        return 0
    keys = (
        "sid",
        "openid",
        "unionid",
        "nickname",
        "app_id",
        "signed_in_at",
        "expires_at",
        "client",
        "user_agent",
    )
    table = [list(_COLUMNS)] + [[_cell(row[key]) for key in keys] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return "".join(c if c.isprintable() else " " for c in text)


def revoke_sessions(
    settings: Settings, *, user: str | None, sid: str | None, everyone: bool
) -> int:
    user = user_key(user)
    store = _store(settings)
    now = time.time()
    try:
        if sid is not None:
            known = {record.sid: record.expires_at for record in store.sessions()}
            until = known.get(sid, now + settings.session.max_age)
            ended = store.revoke(sids=[(sid, float(until))], now=now)
        else:
            ended = store.revoke(users=[user] if user else [], everyone=everyone, now=now)
    except StoreUnavailable as exc:
        print(f"state store unreachable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        store.close()
    # The audit event, on this command's standard error in the gateway's log format.
    configure_logging(settings.server.log_level, settings.server.log_format)
    Audit()(
        "revoke",
        user=user,
        sid=sid,
        everyone=everyone or None,
        sessions=ended,
        by="wechat-gateway sessions revoke",
    )
    print(f"revoked {ended} session{'' if ended == 1 else 's'}")
    return 0
