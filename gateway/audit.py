"""The audit trail: one log line per sign-in, sign-out, revocation and refusal.

Events go to the ``gateway.audit`` logger, in the configured format (``server.log_format``),
with the request id like every line of a request. Each has ``event`` (``signin``,
``signout``, ``revoke``, ``denied``), ``outcome`` (``ok`` or ``failed``), a ``reason`` when
it failed or was refused, who (``openid``, or ``userid`` for a WeCom member, with
``provider`` and ``sid`` when known), and where from (``client``: the client address as
``access.trusted_proxies`` lets the gateway know it; ``user_agent``). Never a code, a token,
a secret or a cookie value: nothing here is read from a query or a cookie but the session's
own identity.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from gateway.identity.headers import clean_text

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.access import TrustedProxies
    from gateway.auth.session import Session

log = logging.getLogger("gateway.audit")

_MAX_USER_AGENT = 256
#: The message of each event, for people reading the text log.
_SUMMARY = {
    ("signin", "ok"): "signed in",
    ("signin", "failed"): "sign-in failed",
    ("signout", "ok"): "signed out",
    ("revoke", "ok"): "revoked sessions",
    ("denied", "ok"): "denied",
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def reason_of(error: BaseException) -> str:
    """``LoginStateInvalid`` -> ``login_state_invalid``: a stable reason for a log search."""
    return _CAMEL.sub("_", type(error).__name__.replace("WeCom", "Wecom")).lower()


class Audit:
    """Writes audit events; knows how to find the client's address."""

    def __init__(self, trusted_proxies: TrustedProxies | None = None) -> None:
        self.trusted_proxies = trusted_proxies

    def __call__(
        self,
        event: str,
        environ: WSGIEnvironment | None = None,
        *,
        session: Session | None = None,
        outcome: str = "ok",
        reason: str | None = None,
        **more: object,
    ) -> None:
        fields: dict[str, object] = {"event": event, "outcome": outcome}
        if reason:
            fields["reason"] = reason
        if session is not None:
            if session.userid:
                fields["userid"] = session.userid
            else:
                fields["openid"] = session.openid
            fields["provider"] = session.provider
            if session.sid:
                fields["sid"] = session.sid
        fields.update((key, value) for key, value in more.items() if value is not None)
        if environ is not None:
            trusted = self.trusted_proxies
            fields["client"] = (
                trusted.client(environ) if trusted is not None else environ.get("REMOTE_ADDR", "")
            )
            agent = str(environ.get("HTTP_USER_AGENT", ""))[:_MAX_USER_AGENT]
            fields["user_agent"] = clean_text(agent)
        summary = _SUMMARY.get((event, outcome), f"{event} {outcome}")
        if reason:
            summary += f" ({reason})"
        log.info("%s", summary, extra={"fields": fields})
