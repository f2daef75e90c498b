"""A WeChat simulator that behaves like the real one on the wire, for demos and tests.

It stands in for both ``open.weixin.qq.com`` (browser pages) and ``api.weixin.qq.com``
(the ``/sns/`` API), so one base URL serves as ``open_base`` and ``api_base``. It is a
Werkzeug WSGI app; ``SimulatorServer`` runs it on a loopback socket. Never expose it: the
control API has no authentication and minting codes is its whole point.

Usage::

    from gateway.simulator import Simulator, SimulatorServer
    with SimulatorServer(Simulator.default()) as server:
        ...  # point wechat.open_base and wechat.api_base at server.url

Browser pages
    ``GET /connect/qrconnect?appid&redirect_uri&response_type=code&scope=snsapi_login&state&lang``
        Website apps only. Validates like WeChat (bad appid/scope/redirect_uri: an error
        page, HTTP 200, no redirect). Shows a real QR code for the phone link, plus plain
        links "Scan as <user>" (``/connect/scan/<ticket>?user=KEY``) and "Cancel"
        (``?cancel=1``). Authorizing 302-redirects to ``redirect_uri?code=CODE&state=STATE``
        (``&`` if the URI already has a query); cancelling redirects with ``state`` only.
        Snapshot users are not offered: snapshot mode only exists inside WeChat.
        ``sim_user=KEY`` after ``lang`` authorizes as that user at once (for tests that
        follow redirects over plain HTTP).
    ``GET /connect/zh_CN/htmledition/js/wxLogin.js``
        WeChat's embedding script (served by ``res.wx.qq.com`` in real life): ``new
        WxLogin({id, appid, scope, redirect_uri, state, self_redirect, style, href, lang})``
        puts a 300x400 iframe of ``/connect/qrconnect?...&login_type=jssdk&self_redirect=..``
        into element ``id``, copying the values into the URL as they are (the caller
        percent-encodes ``redirect_uri`` once). With ``login_type=jssdk`` the QR page needs
        no ``response_type``, fits the frame, and its links and its poll send the *top*
        window to the callback, unless ``self_redirect=true``. ``href`` (custom CSS) is
        ignored.
    ``GET|POST /connect/confirm/<ticket>``
        The phone page the QR code points at; the desktop page polls
        ``GET /connect/poll/<ticket>`` (``{"status": waiting|scanned|confirmed|cancelled|
        expired, "redirect": URL|null}``) every second and follows the redirect.
    ``GET /connect/oauth2/authorize?appid&redirect_uri&response_type=code&scope&state``
        The in-WeChat flow, Official Account apps only (a website app id: error 10016).
        The parameter order is checked on the raw query string. ``state`` must match
        ``[A-Za-z0-9]{0,128}``. Who is "using WeChat" is chosen by ``sim_user=KEY`` placed
        after ``state`` (then the redirect is immediate, for either scope), else on a page:
        a chooser for ``snsapi_base``, a consent page with Allow/Decline for
        ``snsapi_userinfo``.
    An app's ``callback_domain`` (when set) must equal the ``redirect_uri`` host.
    Every page speaks Chinese or English, as the gateway's pages do: ``lang`` in the query
    (``cn``, ``en``, or ``zh``...), then ``Accept-Language``, then English; inside
    ``wxLogin.js``'s frame, which passes ``lang=en`` or nothing, nothing is Chinese. Control
    characters in nicknames show as escapes (``\\x14``).

API (every reply HTTP 200 ``text/plain`` without charset, ``\\/`` escapes, raw UTF-8, raw
control characters; errors ``{"errcode":N,"errmsg":"..., rid: xxxxxxxx-xxxxxxxx-xxxxxxxx"}``)
    ``/sns/oauth2/access_token``   41002/40013 appid, 41004/40125 secret, 40002 grant_type,
                                   41008 missing, 40029 unknown or another app's code,
                                   40163 used, 42003 expired
    ``/sns/oauth2/refresh_token``  40030 unknown, 42002 expired, 42007 revoked; the refresh
                                   token is returned unchanged
    ``/sns/auth``                  41001/40001 token, 42001 expired or revoked, 41009/40003
                                   openid
    ``/sns/userinfo``              as ``/sns/auth``, plus 48001 for a ``snsapi_base`` token
    openids are per (app, user); unionid is per user and sent only by unionid-bound apps;
    snapshot users get ``is_snapshotuser: 1`` and no unionid.

Control API (JSON over HTTP, each mirrored by a ``Simulator`` method)
    ``POST /_sim/faults``   ``{"endpoint": "access_token"|"refresh_token"|"auth"|"userinfo"|"*",
                            "mode": "errcode"|"http_status"|"garbage"|"delay"|"reset",
                            "errcode": -1, "status": 503, "delay": 1.0, "body": "...",
                            "times": 1}``: the next ``times`` matching calls fail that way
                            (see ``Fault``). ``GET`` lists pending faults, ``DELETE`` clears.
    ``GET /_sim/calls[?endpoint=E]``  ``{"calls": [{"endpoint", "params", "outcome", "at"}]}``
                            API calls received, secrets/codes/tokens shown as ``<redacted>``;
                            ``outcome`` is the errcode answered or the fault mode.
                            ``DELETE`` clears the log.
    ``POST /_sim/code``     ``{"app_id": ..., "user": "alice", "scope": optional}`` ->
                            ``{"code", "openid", "unionid"}``: a code without a browser.
    ``POST /_sim/revoke``   ``{"user": "alice"}``: that user's existing refresh tokens answer
                            42007 and access tokens 42001.
    ``POST /_sim/clock``    ``{"advance": 7201}``: move the simulator's clock forward.
    ``GET /_sim/users``     apps, users, and each user's unionid and openid per app.
    ``POST /_sim/reset``    forget codes, tokens, faults, calls, revocations, clock offset.
"""

from gateway.simulator.app import Simulator
from gateway.simulator.core import Call, Fault, SimApp, SimUser
from gateway.simulator.server import SimulatorServer

__all__ = ["Call", "Fault", "SimApp", "SimUser", "Simulator", "SimulatorServer"]
