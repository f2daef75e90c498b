"""What the upstream is told about the user on one request, put together.

The session's own headers (``X-WeChat-OpenID``...) are fixed for a session and remembered
(``identity_headers``); around them come what can change while the session lasts: its
groups (``X-WeChat-Groups``; the groups file may change at any time), the headers under the
app's own names (``upstreams[].headers``) and the signed assertion for the upstream's
audience (``X-WeChat-Assertion``), reused while it stays valid for long enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.identity.headers import encode_nickname, identity_headers

if TYPE_CHECKING:
    from gateway.auth.session import Session
    from gateway.identity.assertion import AssertionSigner
    from gateway.identity.groups import Groups
    from gateway.identity.templates import HeaderTemplates

GROUPS = "X-WeChat-Groups"
ASSERTION = "X-WeChat-Assertion"


class Identity:
    """The identity headers of a request: the session's, its groups, the app's own names,
    the assertion."""

    def __init__(self, groups: Groups, signer: AssertionSigner | None, public_url: str) -> None:
        self.groups = groups
        self.signer = signer
        self.public_url = public_url

    def headers(
        self,
        session: Session,
        audience: str | None = None,
        templates: HeaderTemplates | None = None,
    ) -> list[tuple[str, str]]:
        headers = list(identity_headers(session))
        groups = self.groups.of(session)
        if groups:
            headers.append((GROUPS, ",".join(encode_nickname(name) for name in groups)))
        if templates:
            headers.extend(templates.render(session, groups))
        if self.signer is not None:
            headers.append((ASSERTION, self.signer(session, audience or self.public_url, groups)))
        return headers
