"""Every failure the gateway answers for itself, and the status each one becomes.

The tree, and what the browser gets::

    GatewayError                 status  when
    ├── BadRequest                  400  a request the gateway will not forward as it is (a
    │   │                                malformed WebSocket handshake too)
    │   ├── UpgradeRequired         426  a WebSocket handshake of another version than 13
    │   └── RequestBodyError        400  the client's body could not be read: malformed
    │       │                            chunked framing (one warning line, no traceback)
    │       ├── ClientAborted       400  the client closed or reset its connection mid-body
    │       └── ClientBodyTimeout   408  no body bytes from the client for
    │                                    server.client_body_timeout
    ├── NotFound                    404  an unknown path under /_gateway/
    ├── MethodNotAllowed            405  a reserved path called with the wrong method
    ├── CrossSiteWebSocket          403  a WebSocket opened from a page of another origin
    ├── PayloadTooLarge             413  a body over server.max_body_size
    ├── WebSocketUnsupported        501  a WebSocket under a worker that cannot hold one
    ├── TooManyRequests             429  too many sign-in starts or callbacks from one client
    │                                    address (login.rate_limit), with Retry-After
    ├── StateUnavailable            503  the shared state store cannot be reached (sign-in,
    │                                    sign-out, or sessions once max_staleness is over)
    ├── UpstreamError                    the app behind the gateway failed
    │   ├── UpstreamUnavailable     502  refused, reset, closed, or an invalid answer
    │   └── UpstreamTimeout         504  no response headers within upstreams[].timeout
    └── LoginError                       signing in did not work; every page offers a retry
        ├── LoginStateInvalid       400  callback state missing, unknown, expired, reused,
        │                                or from another browser
        ├── LoginCancelled          401  the user declined on WeChat (no code)
        ├── SnapshotUser            401  WeChat's snapshot mode: only a preview identity
        ├── SignInRequired          401  no session: an API call, forward-auth, userinfo
        ├── NotAllowed              403  signed in, but not on the allow list
        │   ├── WeComNotAllowed     403  the same, for a WeCom account
        │   ├── NotAMember          403  WeCom: someone outside the company (no
        │   │                            allow_external)
        │   ├── MemberInactive      403  WeCom: a member who is disabled, not activated
        │   │                            or has left
        │   └── OutsideVisibility   403  WeCom: a member the app is not visible to
        ├── ProviderFailed          502  the identity provider answered with an error or
        │   │                            garbage
        │   ├── ProviderMisconfigured 502  app id / secret / scope wrong: an operator must act
        │   └── ProviderUnreachable 502  the provider could not be reached at all
        ├── ProviderBusy            503  the provider is busy or over quota; retry later
        └── ProviderTimedOut        504  the provider did not answer within its timeout

A WeCom sign-in fails with the ``WeCom*`` subclass of each provider failure (same status,
"WeCom" in the words), so nobody is told WeChat failed when it was WeCom.

The sign-in pages are named for the identity provider's failure, not WeChat's wire: the
WeChat client's own exceptions (``WeChatTimeout``, ``WeChatUnavailable``, ``SystemBusy``,
in ``gateway.providers.wechat.client``) are mapped onto them in one place, the provider.

Each error carries a short, safe ``detail`` for the page: never a secret, a token, a code
or a traceback. ``gateway.web.pages`` is the single place that turns one into a response.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"
    hint = "Try again in a moment."
    #: The ``error`` of the JSON answer when it is a stable code rather than the title.
    code: str | None = None

    def __init__(
        self,
        detail: str = "",
        *,
        actions: tuple[tuple[str, str], ...] = (),
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        #: (label, href) links the page offers, e.g. "Try again".
        self.actions = actions
        #: Response headers the page must carry (a cookie to clear, Retry-After).
        self.extra_headers = extra_headers


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"
    hint = "Check the address and try again."


class UpgradeRequired(BadRequest):
    """RFC 6455 4.4: the version the gateway speaks goes back in ``Sec-WebSocket-Version``."""

    status = 426
    title = "Upgrade required"
    hint = "Use WebSocket version 13."

    def __init__(
        self,
        detail: str = "",
        *,
        actions: tuple[tuple[str, str], ...] = (),
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(
            detail,
            actions=actions,
            extra_headers=(("Sec-WebSocket-Version", "13"), *extra_headers),
        )


class CrossSiteWebSocket(GatewayError):
    """Cross-site WebSocket hijacking: the browser sends its cookie whatever page opens the
    socket, so an ``Origin`` that is not the gateway's (or listed) is refused."""

    status = 403
    title = "Forbidden"
    hint = "This WebSocket was opened by a page of another site."


class WebSocketUnsupported(GatewayError):
    status = 501
    title = "Not implemented"
    hint = "WebSocket needs the gevent worker (server.worker_class: gevent)."


class RequestBodyError(BadRequest):
    """Reading the client's request body failed: the client's fault, never the upstream's."""

    title = "Bad request body"
    hint = "The request body could not be read. Try again."


class ClientAborted(RequestBodyError):
    title = "Request aborted"
    hint = "The request ended before its body was complete. Try again."


class ClientBodyTimeout(RequestBodyError):
    status = 408
    title = "Request timeout"
    hint = "The request body arrived too slowly. Try again."


class NotFound(GatewayError):
    status = 404
    title = "Not found"
    hint = "Check the address."


class MethodNotAllowed(GatewayError):
    status = 405
    title = "Method not allowed"
    hint = "This address does not accept that kind of request."

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(f"allowed: {', '.join(allowed)}")
        self.allowed = allowed


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request too large"
    hint = "Send a smaller request."

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


class TooManyRequests(GatewayError):
    """Too many sign-in starts or callbacks from one client address (``login.rate_limit``)."""

    status = 429
    title = "Too many sign-in attempts"
    hint = "Wait a moment, then sign in again."

    def __init__(
        self,
        retry_after: int | None = None,
        *,
        actions: tuple[tuple[str, str], ...] = (),
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        retry = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
        super().__init__(
            f"try again in {retry_after} s" if retry_after is not None else "",
            actions=actions,
            extra_headers=(*retry, *extra_headers),
        )
        self.retry_after = retry_after


class StateUnavailable(GatewayError):
    status = 503
    title = "Service unavailable"
    hint = "The sign-in gateway cannot reach its session store right now. Try again in a moment."

    def __init__(
        self,
        detail: str = "",
        *,
        actions: tuple[tuple[str, str], ...] = (),
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(
            detail, actions=actions, extra_headers=(("Retry-After", "5"), *extra_headers)
        )


class UpstreamError(GatewayError):
    status = 502
    title = "Bad gateway"
    hint = "The application behind the sign-in gateway is not answering. Try again in a moment."


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "Gateway timeout"
    hint = (
        "The application behind the sign-in gateway took too long to answer. Try again in a moment."
    )


class LoginError(GatewayError):
    status = 502
    title = "Sign-in failed"
    hint = "Signing in with WeChat did not work. Try again."


class LoginStateInvalid(LoginError):
    status = 400
    title = "Sign-in link not valid"
    hint = (
        "This sign-in link has expired, was already used, or was started in another browser."
        " Start again from this browser."
    )


class LoginCancelled(LoginError):
    status = 401
    title = "Sign-in cancelled"
    hint = "You did not confirm the sign-in in WeChat. Try again when you are ready."


class SnapshotUser(LoginError):
    status = 401
    title = "Open the full page to sign in"
    hint = (
        "WeChat only shared a preview of your identity. Tap 'Use full service' at the bottom"
        " of the page in WeChat, then confirm the sign-in."
    )


class SignInRequired(LoginError):
    """The one 401: a proxied API call, forward-auth or ``/_gateway/userinfo`` without a
    session. JSON ``{error: "unauthorized", message, login_url}``, ``WWW-Authenticate``."""

    status = 401
    title = "Sign-in required"
    hint = "Sign in with WeChat first."
    code = "unauthorized"


class NotAllowed(LoginError):
    status = 403
    title = "Access denied"
    hint = "You are signed in with WeChat, but this account may not use this application."
    #: Who was refused (for the audit trail), when known.
    subject: str | None = None


class ProviderFailed(LoginError):
    status = 502
    title = "WeChat sign-in failed"
    hint = "WeChat could not complete the sign-in. Try again in a moment."


class ProviderMisconfigured(ProviderFailed):
    title = "Sign-in is misconfigured"
    hint = (
        "WeChat refused this application's sign-in settings. There is nothing you can do about"
        " it: please tell the administrator."
    )


class ProviderUnreachable(ProviderFailed):
    title = "Cannot reach WeChat"
    hint = "The sign-in gateway cannot reach WeChat right now. Try again in a moment."


class ProviderBusy(LoginError):
    status = 503
    title = "WeChat is busy"
    hint = "WeChat is busy right now. Try again in a minute."

    def __init__(
        self, detail: str = "", *, retry_after: int, actions: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(
            detail, actions=actions, extra_headers=(("Retry-After", str(retry_after)),)
        )
        self.retry_after = retry_after


class ProviderTimedOut(LoginError):
    status = 504
    title = "WeChat did not answer"
    hint = "WeChat took too long to answer. Try again in a moment."


# -- WeCom: the same failures, named for WeCom, and its own refusals ---------------------


class WeComCancelled(LoginCancelled):
    hint = "You did not confirm the sign-in in WeCom. Try again when you are ready."


class WeComNotAllowed(NotAllowed):
    hint = "You are signed in with WeCom, but this account may not use this application."


class NotAMember(NotAllowed):
    title = "Not a member of this company"
    hint = (
        "You signed in with WeCom as someone outside this company. Only the company's members"
        " may use this application."
    )


class MemberInactive(NotAllowed):
    title = "Your WeCom account is not active"
    hint = (
        "Your account in the company's WeCom is disabled, not yet activated or has left the"
        " company. Ask your administrator."
    )


class OutsideVisibility(NotAllowed):
    title = "This application is not available to you"
    hint = (
        "Your WeCom account is outside this application's visible range in the company's WeCom."
        " Ask your administrator to add you."
    )


class WeComFailed(ProviderFailed):
    title = "WeCom sign-in failed"
    hint = "WeCom could not complete the sign-in. Try again in a moment."


class WeComMisconfigured(ProviderMisconfigured):
    hint = (
        "WeCom refused this application's sign-in settings. There is nothing you can do about"
        " it: please tell the administrator."
    )


class WeComUnreachable(ProviderUnreachable):
    title = "Cannot reach WeCom"
    hint = "The sign-in gateway cannot reach WeCom right now. Try again in a moment."


class WeComBusy(ProviderBusy):
    title = "WeCom is busy"
    hint = "WeCom is busy right now. Try again in a minute."


class WeComTimedOut(ProviderTimedOut):
    title = "WeCom did not answer"
    hint = "WeCom took too long to answer. Try again in a moment."
