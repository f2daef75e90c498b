"""Every failure the gateway answers for itself, and the status each one becomes.

The tree, and what the browser gets::

    GatewayError                 status  when
    ├── BadRequest                  400  a request the gateway will not forward as it is
    ├── NotFound                    404  an unknown path under /_gateway/
    ├── MethodNotAllowed            405  a reserved path called with the wrong method
    ├── PayloadTooLarge             413  a body over server.max_body_size
    └── UpstreamError                    the app behind the gateway failed
        ├── UpstreamUnavailable     502  refused, reset, closed, or an invalid answer
        └── UpstreamTimeout         504  no response headers within upstreams[].timeout

Each error carries a short, safe ``detail`` for the page: never a secret, a token, a code
or a traceback. ``gateway.pages`` is the single place that turns one into a response.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    title = "Something went wrong"
    hint = "Try again in a moment."

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"
    hint = "Check the address and try again."


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
