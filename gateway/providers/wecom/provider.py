"""WeCom (企业微信) as an ``IdentityProvider``: the web login for every browser, the silent
in-app authorization inside the WeCom client.

Both flows end in the same callback and the same exchange: the code names a member
(``auth/getuserinfo``), whose name, departments and status come from ``user/get``. Only an
active member (status 1) the app is visible to is signed in; someone outside the company
only with ``wecom.allow_external``. Each refusal is its own 403 page saying why. The
departments above a member's own (for ``wecom-dept:ID``) come from ``department/list``,
read at most every ten minutes per worker. WeCom's failures become the gateway's pages in
one mapping (``_login_failure``); the client has already logged their cause, once, with
errcode and hint.

The web login is the new ``wwlogin/sso/login`` page (``login_type=CorpApp``) or, with
``wecom.web_login: qrconnect``, the legacy ``wwopen/sso/qrConnect``. The panel the
gateway's own login page frames is always the legacy QR page in its ``login_type=jssdk``
form, the iframe WeCom's ``wwLogin.js`` builds, which sends the top window to the callback.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlencode

from gateway.errors import (
    LoginError,
    MemberInactive,
    NotAMember,
    OutsideVisibility,
    WeComBusy,
    WeComFailed,
    WeComMisconfigured,
    WeComTimedOut,
    WeComUnreachable,
)
from gateway.providers.base import AuthorizationEnded, CannotRevalidate, Identity
from gateway.providers.wecom.client import (
    ExternalUser,
    MemberNotFound,
    MemberNotVisible,
    RateLimited,
    SystemBusy,
    WeComAPIError,
    WeComError,
    WeComTimeout,
    WeComUnavailable,
)
from gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import WSGIEnvironment

    from gateway.auth.session import Session
    from gateway.providers.base import EmbeddedLogin
    from gateway.providers.wecom.client import Member, WeComClient

log = logging.getLogger("gateway.login")

PROVIDER: Final = "wecom"
#: How long a worker uses the department tree it read before reading it again.
TREE_TTL: Final = 600.0


class DepartmentTree:
    """Which departments are above which, from ``department/list``, shared by a worker's
    flows. Read when older than ``TREE_TTL``; a read that fails keeps the last tree (or none:
    a member is then in their own departments only) and is tried again a minute later."""

    def __init__(self, client: WeComClient, *, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.clock = clock
        self._parents: dict[int, int] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def scope(self, departments: Iterable[int], *, deadline: float) -> tuple[int, ...]:
        """``departments`` and every department above them, in a stable order."""
        self._refresh(deadline)
        parents = self._parents
        seen: dict[int, None] = {}
        for department in departments:
            while department > 0 and department not in seen:
                seen[department] = None
                department = parents.get(department, 0)
        return tuple(sorted(seen))

    def _refresh(self, deadline: float) -> None:
        if self.clock() - self._read_at < TREE_TTL:
            return
        with self._lock:
            if self.clock() - self._read_at < TREE_TTL:
                return
            try:
                listed = self.client.departments(deadline=deadline)
            except (WeComError, StoreUnavailable) as exc:
                # The client logged the cause; wecom-dept:ID matches own departments only.
                log.warning("WeCom department tree not read, tried again in a minute: %s", exc)
                self._read_at = self.clock() - TREE_TTL + 60
                return
            self._parents = {d.id: d.parentid for d in listed}
            self._read_at = self.clock()


class WeComProvider:
    """One WeCom self-built app and one flow a browser takes through it.

    ``key`` ``wecom``: the web login, every browser. ``key`` ``wecom_app``: the in-app
    authorization, inside the WeCom client only (its User-Agent says ``wxwork``).
    """

    name = PROVIDER

    def __init__(
        self,
        client: WeComClient,
        tree: DepartmentTree,
        *,
        in_app: bool,
        timeout: float,
        allow_external: bool,
        web_login: str = "sso",
        login_base: str = "https://login.work.weixin.qq.com",
        qrconnect_base: str = "https://open.work.weixin.qq.com",
        open_base: str = "https://open.weixin.qq.com",
    ) -> None:
        self.client = client
        self.tree = tree
        self.in_app = in_app
        self.key = "wecom_app" if in_app else "wecom"
        self.app_id = client.corp_id
        self.timeout = timeout
        self.allow_external = allow_external
        self.web_login = web_login
        self.login_base = login_base.rstrip("/")
        self.qrconnect_base = qrconnect_base.rstrip("/")
        self.open_base = open_base.rstrip("/")

    def serves(self, environ: WSGIEnvironment) -> bool:
        """The in-app flow serves the WeCom client (``wxwork``, any case, also in
        ``wxworklocal``); the web login serves all."""
        return not self.in_app or "wxwork" in environ.get("HTTP_USER_AGENT", "").lower()

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        client = self.client
        if self.in_app:
            query = urlencode(
                {
                    "appid": client.corp_id,
                    "redirect_uri": redirect_uri,
                    "response_type": "code",
                    "scope": "snsapi_base",
                    "state": state,
                    "agentid": client.agent_id,
                },
                quote_via=quote,
                safe="",
            )
            return f"{self.open_base}/connect/oauth2/authorize?{query}#wechat_redirect"
        if self.web_login == "qrconnect":
            return self.panel_url(redirect_uri, state, frame=False)
        query = urlencode(
            {
                "login_type": "CorpApp",
                "appid": client.corp_id,
                "agentid": client.agent_id,
                "redirect_uri": redirect_uri,
                "state": state,
            },
            quote_via=quote,
            safe="",
        )
        return f"{self.login_base}/wwlogin/sso/login?{query}"

    def panel_url(
        self, redirect_uri: str, state: str, *, frame: bool = True, lang: str = ""
    ) -> str:
        """WeCom's legacy QR page for this login; ``frame``: the form ``wwLogin.js`` frames."""
        params: dict[str, object] = {
            "appid": self.client.corp_id,
            "agentid": self.client.agent_id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
        if lang:
            params["lang"] = lang
        if frame:
            params["login_type"] = "jssdk"
        query = urlencode(params, quote_via=quote, safe="")
        return f"{self.qrconnect_base}/wwopen/sso/qrConnect?{query}"

    def embedded_login(self, redirect_uri: str, state: str) -> EmbeddedLogin | None:
        # WeChat's wxLogin.js panel; WeCom's is ``panel_url``.
        return None

    def sign_in(self, code: str, *, retry: tuple[tuple[str, str], ...]) -> Identity:
        """Code -> who (member or not) -> the member's record; WeCom trouble and refusals
        become a ``LoginError``."""
        deadline = self.client.monotonic() + self.timeout
        try:
            who = self.client.user_identity(code, deadline=deadline)
        except MemberNotVisible:
            # 60011/60021 for the code itself: someone the app is not visible to.
            raise _refused(OutsideVisibility, "", retry) from None
        except WeComError as exc:
            raise _login_failure(exc, retry) from None
        if isinstance(who, ExternalUser):
            return self._outsider(who, retry)
        try:
            member = self.client.member(who.userid, deadline=deadline)
        except MemberNotFound:
            raise _refused(NotAMember, f"wecom:{who.userid}", retry) from None
        except MemberNotVisible:
            raise _refused(OutsideVisibility, f"wecom:{who.userid}", retry) from None
        except WeComError as exc:
            raise _login_failure(exc, retry) from None
        if not member.active:
            log.info("refused WeCom member userid=%s: status %s", member.userid, member.status)
            raise _refused(MemberInactive, f"wecom:{member.userid}", retry)
        return self._identity(member, deadline)

    def _outsider(self, who: ExternalUser, retry: tuple[tuple[str, str], ...]) -> Identity:
        if not self.allow_external:
            log.info("refused a WeCom non-member (openid=%s): allow_external is off", who.openid)
            raise _refused(NotAMember, who.openid, retry)
        return Identity(
            provider=PROVIDER,
            subject=who.openid,
            app_id=self.client.corp_id,
            unionid=None,
            nickname="",
            avatar="",
        )

    def _identity(self, member: Member, deadline: float) -> Identity:
        return Identity(
            provider=PROVIDER,
            subject="",
            app_id=self.client.corp_id,
            unionid=None,
            nickname=member.name,
            avatar=member.avatar,
            userid=member.userid,
            departments=member.departments,
            dept_scope=self.tree.scope(member.departments, deadline=deadline),
        )

    def revalidate(self, session: Session) -> Session:
        """A member is asked for again (``user/get``): gone, out of the app's visibility or
        no longer active ends the session; a moved member's departments are updated. Outside
        users cannot be looked up: their sessions stand until ``max_age``."""
        if not session.userid:
            return session
        deadline = self.client.monotonic() + self.timeout
        try:
            member = self.client.member(session.userid, deadline=deadline)
        except MemberNotVisible as exc:  # MemberNotFound too: removed or renamed
            raise AuthorizationEnded(str(exc)) from None
        except (WeComError, StoreUnavailable) as exc:
            raise CannotRevalidate(str(exc)) from None
        if not member.active:
            raise AuthorizationEnded(f"the member's status is {member.status}")
        identity = self._identity(member, deadline)
        return dataclasses.replace(
            session,
            nickname=identity.nickname,
            avatar=identity.avatar,
            departments=identity.departments,
            dept_scope=identity.dept_scope,
        )

    def close(self) -> None:
        if not self.in_app:  # the two flows share one client
            self.client.close()


def _refused(
    error: type[NotAMember | MemberInactive | OutsideVisibility],
    subject: str,
    retry: tuple[tuple[str, str], ...],
) -> LoginError:
    refused = error(actions=(("Sign in with another account", retry[0][1]),) if retry else ())
    refused.subject = subject
    return refused


def _login_failure(exc: WeComError, retry: tuple[tuple[str, str], ...]) -> LoginError:
    """The page a WeCom failure during login becomes; the client already logged the cause."""
    if isinstance(exc, WeComTimeout):
        return WeComTimedOut(actions=retry)
    if isinstance(exc, RateLimited):
        return WeComBusy(_detail(exc), retry_after=exc.retry_after, actions=retry)
    if isinstance(exc, SystemBusy):
        return WeComBusy(_detail(exc), retry_after=5, actions=retry)
    if exc.is_config_error:
        return WeComMisconfigured(_detail(exc), actions=retry)
    if isinstance(exc, WeComUnavailable):
        return WeComUnreachable(actions=retry)
    return WeComFailed(_detail(exc), actions=retry)


def _detail(exc: WeComError) -> str:
    """A language-neutral detail for the page: the errcode, which support can look up."""
    return f"errcode {exc.errcode}" if isinstance(exc, WeComAPIError) else ""
