"""WeCom (企业微信) sign-in, end to end: the real gateway (gunicorn, two workers where it
matters) between a browser, the WeCom simulator's server and the header-echo app.

Every WeCom interaction goes over sockets: the browser follows the gateway's redirects to
the simulator's web login (``wwlogin/sso/login``), its legacy QR page (``qrConnect``) or the
in-app authorization, picks who signs in with ``sim_user=``, and brings the callback back;
the gateway redeems the code with the simulator's ``/cgi-bin/`` API. The simulator's control
API injects WeCom's failures, changes members and the app's visibility, drops tokens early,
and its call log shows which API calls the gateway made.

The gateways, one per configuration (module-scoped, each with its own simulator):
``wecom_only`` (no ``wechat`` section; groups by userid and department), ``qrconnect``
(``web_login: qrconnect``, ``allow_external``), ``page_mode`` (``login.mode: page``),
``both`` (WeChat with its Official Account, and WeCom), ``allow`` (allow lists by userid
and department), ``fresh`` (an empty token cache, for token sharing), ``revalidating``
(``session.revalidate: 1s``), and per test, gateways whose ``gettoken`` fails for good.
The simulator alone is ``tests/unit/test_simulator_wecom.py``; the API client alone
``tests/unit/test_wecom_client.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from tests.helpers.e2e import assert_no_session_set, code_of, location, set_cookie, state_of
from tests.helpers.support import COOKIE, SESSION_SECRET
from tests.helpers.upstreams import EchoUpstream, echo_of
from tests.helpers.wechat_e2e import WECHAT_UA, UABrowser, assert_nothing_secret
from tests.helpers.wecom_e2e import (
    AGENT_ID,
    CORP_ID,
    SECRET,
    WECOM_TIMEOUT,
    WECOM_UA,
    WeComSite,
    choice_links,
    clean,
    deploy,
    poll,
)

#: What a failed sign-in may take beyond ``wecom.timeout``.
SLACK = 0.6
JSON = {"Accept": "application/json"}
STATE = re.compile(r"[A-Za-z0-9]{1,128}")
CALLBACK = "/_gateway/callback"
#: lisi's name is "李四\x14🚀": the control character removed, the rest percent-encoded.
LISI_NICKNAME = "%E6%9D%8E%E5%9B%9B%F0%9F%9A%80"
ZHANGSAN_NICKNAME = "%E5%BC%A0%E4%B8%89"
GROUPS = {
    "platform": ["wecom:ZHANGSAN"],  # a userid in another case than WeCom's
    "rd": ["wecom-dept:2"],  # 研发中心 and the departments below it (3, 4)
    "marketing": ["wecom:qian-ba@hq"],
}
#: What the upstream must never see for a WeCom member.
WECHAT_ONLY = ("X-WeChat-OpenID", "X-WeChat-UnionID", "X-WeChat-AppID")


# --- the gateways ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wecom_only(
    tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream
) -> Iterator[WeComSite]:
    yield from deploy(tmp_path_factory, upstream, access={"groups": GROUPS})


@pytest.fixture
def site(wecom_only: WeComSite) -> Iterator[WeComSite]:
    yield from clean(wecom_only)


@pytest.fixture(scope="module")
def qrconnect(
    tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream
) -> Iterator[WeComSite]:
    yield from deploy(
        tmp_path_factory,
        upstream,
        workers=1,
        wecom={"web_login": "qrconnect", "allow_external": True},
    )


@pytest.fixture(scope="module")
def page_mode(
    tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream
) -> Iterator[WeComSite]:
    yield from deploy(tmp_path_factory, upstream, workers=1, login={"mode": "page"})


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[WeComSite]:
    yield from deploy(tmp_path_factory, upstream, wechat=True)


@pytest.fixture(scope="module")
def allow(tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[WeComSite]:
    yield from deploy(
        tmp_path_factory,
        upstream,
        workers=1,
        access={"allow": ["wecom:zhangsan"]},
        upstreams=[
            {"prefix": "/rd/", "url": upstream.url, "allow": ["wecom-dept:2"]},
            {"prefix": "/", "url": upstream.url},
        ],
    )


# --- reading the answers ---------------------------------------------------------------


def url_parts(url: str) -> tuple[str, dict[str, str], str]:
    """(scheme://host/path, the query's parameters (each once), the fragment)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), query
    return (
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        {name: values[0] for name, values in query.items()},
        parts.fragment,
    )


def identity_of(site: WeComSite, browser: UABrowser, path: str = "/app") -> dict[str, str]:
    """The X-WeChat-* headers (but the assertion) the upstream got for ``browser``."""
    return echo_of(browser.get(site.url + path)).wechat_headers()


def verified(site: WeComSite, token: str) -> dict[str, Any]:
    """The assertion's claims, verified as an app would: against the gateway's JWKS."""
    reply = site.http.get(site.url + "/_gateway/jwks.json", timeout=10)
    assert reply.status_code == 200
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_json(reply.text).keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience=site.url, issuer=site.url
    )
    return claims


def assert_refused(
    reply: requests.Response, browser: UABrowser, heading: str, zh: str, api: bool
) -> None:
    """A clean 403 without a session: the page saying why, or its JSON for an API call."""
    assert reply.status_code == 403, (reply.status_code, reply.text[:300])
    assert "Traceback" not in reply.text
    assert_no_session_set(reply)
    assert browser.session_value() is None
    if api:
        assert reply.headers["Content-Type"].startswith("application/json")
        body = reply.json()
        assert body["error"] == heading
        assert body["message"]
    else:
        assert reply.headers["Content-Type"].startswith("text/html")
        assert f"<h1>{heading}</h1>" in reply.text
        assert f"<h1>{zh}</h1>" in reply.text  # the translation, a click away


# --- 1. the way in ---------------------------------------------------------------------


def test_login_sends_the_browser_to_wecoms_web_login(site: WeComSite) -> None:
    """Without a ``wechat`` section, ``/_gateway/login`` 302s to WeCom's web login for the
    configured app, back to ``public_url``'s callback, with a fresh state; the member then
    lands on the page they asked for."""
    browser = site.browser()
    challenge = browser.get(site.url + "/reports?q=1")
    assert location(challenge) == site.url + "/_gateway/login?rd=%2Freports%3Fq%3D1"
    start = browser.get(location(challenge))
    target = location(start)
    base, query, fragment = url_parts(target)
    assert base == site.sim + "/wwlogin/sso/login"
    assert query == {
        "login_type": "CorpApp",
        "appid": CORP_ID,
        "agentid": str(AGENT_ID),
        "redirect_uri": site.url + CALLBACK,
        "state": query["state"],
    }
    assert fragment == ""
    assert STATE.fullmatch(query["state"])
    # redirect_uri encoded whole, as WeCom wants it.
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in target
    callback = browser.get(site.pick(target, "ZhangSan"))
    assert location(callback) == site.url + "/reports?q=1"
    assert identity_of(site, browser, "/reports?q=1")["X-WeChat-UserID"] == "ZhangSan"


def test_a_new_state_for_every_login(site: WeComSite) -> None:
    """Every start of a sign-in gets its own state: none is ever handed out twice."""
    browser = site.browser()
    states = {state_of(location(browser.get(site.url + "/_gateway/login"))) for _ in range(3)}
    assert len(states) == 3


def test_qrconnect_sends_the_browser_to_the_legacy_qr_page(qrconnect: WeComSite) -> None:
    """``web_login: qrconnect``: the legacy QR page instead; its callback carries
    ``&appid=`` after the code and state, and signs the member in all the same."""
    browser = qrconnect.browser()
    target = qrconnect.begin(browser, "/legacy")
    base, query, _ = url_parts(target)
    assert base == qrconnect.sim + "/wwopen/sso/qrConnect"
    assert query == {
        "appid": CORP_ID,
        "agentid": str(AGENT_ID),
        "redirect_uri": qrconnect.url + CALLBACK,
        "state": query["state"],
    }
    callback_url = qrconnect.pick(target, "lisi")
    assert url_parts(callback_url)[1]["appid"] == CORP_ID
    callback = browser.get(callback_url)
    assert location(callback) == qrconnect.url + "/legacy"
    seen = identity_of(qrconnect, browser, "/legacy")
    assert seen["X-WeChat-UserID"] == "lisi"
    assert seen["X-WeChat-Provider"] == "wecom"


def test_page_mode_shows_the_framed_qr_page_and_a_link(page_mode: WeComSite) -> None:
    """``login.mode: page``: the gateway's own page frames WeCom's QR page in the form
    ``wwLogin.js`` builds (``login_type=jssdk``) and links to the web login, for one login
    (one state); either way in signs the member in."""
    browser = page_mode.browser()
    challenge = browser.get(page_mode.url + "/dash")
    page = browser.get(location(challenge))
    assert page.status_code == 200, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assert f"frame-src {page_mode.sim}" in page.headers["Content-Security-Policy"]
    found = choice_links(page.text)
    assert set(found) == {"wecom", "frame"}, found
    frame_base, frame, _ = url_parts(found["frame"])
    assert frame_base == page_mode.sim + "/wwopen/sso/qrConnect"
    assert frame == {
        "appid": CORP_ID,
        "agentid": str(AGENT_ID),
        "redirect_uri": page_mode.url + CALLBACK,
        "state": frame["state"],
        "lang": "en",
        "login_type": "jssdk",
    }
    link_base, link, _ = url_parts(found["wecom"])
    assert link_base == page_mode.sim + "/wwlogin/sso/login"
    assert link["state"] == frame["state"]
    assert location(browser.get(page_mode.pick(found["wecom"], "ZhangSan"))) == (
        page_mode.url + "/dash"
    )
    assert identity_of(page_mode, browser, "/dash")["X-WeChat-UserID"] == "ZhangSan"

    # The framed page sends the top window to the callback (with &appid=).
    other = page_mode.browser()
    framed = choice_links(other.get(page_mode.url + "/_gateway/login?rd=/dash").text)["frame"]
    callback_url = page_mode.pick(framed, "lisi")
    assert "&appid=" + CORP_ID in callback_url
    assert location(other.get(callback_url)) == page_mode.url + "/dash"
    assert identity_of(page_mode, other, "/dash")["X-WeChat-UserID"] == "lisi"


# --- 2. what the upstream, the app and forward-auth are told ------------------------------


def test_a_members_identity_headers(site: WeComSite) -> None:
    """The upstream gets the member's identity as WeCom gave it: userid, corp, name
    (cleaned and encoded), avatar (none for an app created after 2022-06-20), departments
    in WeCom's order, groups; no WeChat ids; every client copy of an X-WeChat-* header is
    removed, whatever its spelling."""
    browser = site.signed_in("lisi", "/app")
    forged = {
        "X-WeChat-UserID": "boss",
        "x-wechat-corpid": "wwevil",
        "X-WECHAT-DEPARTMENTS": "1",
        "X-WeChat-Provider": "wechat",
        "X-WeChat-OpenID": "oForged",
        "X-WeChat-UnionID": "uForged",
        "X-WeChat-AppID": "wxForged",
        "X-WeChat-Groups": "admins",
        "X-WeChat-Nickname": "root",
        "X-WeChat-Assertion": "forged",
    }
    seen = echo_of(browser.get(site.url + "/app", headers=forged))
    assert seen.wechat_headers() == {
        "X-WeChat-UserID": "lisi",
        "X-WeChat-CorpID": CORP_ID,
        "X-WeChat-Departments": "4,3",
        "X-WeChat-Nickname": LISI_NICKNAME,
        "X-WeChat-Avatar": "",
        "X-WeChat-Provider": "wecom",
        "X-WeChat-Groups": "rd",
    }
    assertion = seen.value("X-WeChat-Assertion")
    assert assertion and assertion != "forged"


def test_the_userid_comes_in_wecoms_case(site: WeComSite) -> None:
    """Picked as ``zhangsan``, WeCom says ``ZhangSan``: that is what the app gets."""
    browser = site.signed_in("zhangsan")
    seen = identity_of(site, browser)
    assert seen["X-WeChat-UserID"] == "ZhangSan"
    assert seen["X-WeChat-Nickname"] == ZHANGSAN_NICKNAME
    assert seen["X-WeChat-Departments"] == "3"
    for name in WECHAT_ONLY:
        assert name not in seen


def test_a_member_visible_by_name_only_has_no_departments_header(site: WeComSite) -> None:
    """``qian-ba@hq`` is visible to the app by name, not through a department: WeCom
    lists no department, and the header is absent rather than empty."""
    browser = site.signed_in("qian-ba@hq")
    seen = identity_of(site, browser)
    assert seen["X-WeChat-UserID"] == "qian-ba@hq"
    assert "X-WeChat-Departments" not in seen
    assert seen["X-WeChat-Provider"] == "wecom"


def test_the_assertion_of_a_member_verifies_against_the_jwks(site: WeComSite) -> None:
    """The app can verify who it is talking to: the assertion checks out against
    ``/_gateway/jwks.json`` and names the member, never a WeChat id."""
    browser = site.signed_in("lisi")
    token = echo_of(browser.get(site.url + "/app")).value("X-WeChat-Assertion")
    assert token
    claims = verified(site, token)
    session = browser.session()
    assert session is not None
    assert claims["provider"] == "wecom"
    assert claims["sub"] == "wecom:lisi"
    assert claims["userid"] == "lisi"
    assert claims["corp_id"] == CORP_ID
    assert claims["departments"] == [4, 3]
    assert claims["nickname"] == "李四🚀"
    assert claims["groups"] == ["rd"]
    assert claims["sid"] == session.sid
    assert 0 < claims["exp"] - claims["iat"] <= 300
    for absent in ("openid", "app_id", "unionid"):
        assert absent not in claims


def test_userinfo_of_a_member(site: WeComSite) -> None:
    """``/_gateway/userinfo`` adds provider, userid, corp and departments; the WeChat
    fields are null."""
    browser = site.signed_in("lisi")
    reply = browser.get(site.url + "/_gateway/userinfo", headers=JSON)
    assert reply.status_code == 200
    assert reply.json() == {
        "openid": None,
        "unionid": None,
        "app_id": None,
        "nickname": "李四🚀",
        "avatar": "",
        "provider": "wecom",
        "userid": "lisi",
        "corp_id": CORP_ID,
        "departments": [4, 3],
    }


def test_forward_auth_answers_with_the_members_headers(site: WeComSite) -> None:
    """``/_gateway/auth`` (nginx ``auth_request``) answers with the headers the upstream
    would get, ignoring the client's own; 401 without a session."""
    browser = site.signed_in("ZhangSan")
    reply = browser.get(site.url + "/_gateway/auth", headers={"X-WeChat-UserID": "boss"})
    assert reply.status_code == 200
    assert reply.headers["X-WeChat-Provider"] == "wecom"
    assert reply.headers["X-WeChat-UserID"] == "ZhangSan"
    assert reply.headers["X-WeChat-CorpID"] == CORP_ID
    assert reply.headers["X-WeChat-Departments"] == "3"
    assert reply.headers["X-WeChat-Nickname"] == ZHANGSAN_NICKNAME
    assert reply.headers["X-WeChat-Avatar"] == ""
    assert reply.headers["X-WeChat-Groups"] == "platform,rd"
    for name in WECHAT_ONLY:
        assert name not in reply.headers
    assert site.browser().get(site.url + "/_gateway/auth").status_code == 401


@pytest.mark.parametrize(
    ("user", "groups"),
    [("ZhangSan", "platform,rd"), ("lisi", "rd"), ("qian-ba@hq", "marketing")],
)
def test_groups_by_userid_and_by_department(site: WeComSite, user: str, groups: str) -> None:
    """``wecom:USERID`` in any case, and ``wecom-dept:2`` for members of departments below
    it (ZhangSan in 3, lisi in 4 and 3)."""
    assert identity_of(site, site.signed_in(user))["X-WeChat-Groups"] == groups


# --- 3. inside the WeCom client, and with WeChat beside WeCom -----------------------------

IN_APP_UAS = {
    "phone": WECOM_UA,
    "windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "wxwork/4.1.20 (MicroMessenger/6.2) WindowsWechat MailPlugin_Electron WeMail"
    ),
    "private": "Mozilla/5.0 (Linux; Android 14) Mobile Safari/537.36 wxworklocal/3.1.8",
}


@pytest.mark.parametrize("ua", list(IN_APP_UAS))
@pytest.mark.parametrize("deployment", ["wecom_only", "both"])
def test_inside_the_wecom_client_sign_in_is_the_in_app_authorization(
    request: pytest.FixtureRequest, deployment: str, ua: str
) -> None:
    """A User-Agent with ``wxwork`` (which also says ``MicroMessenger``) goes to WeCom's
    silent in-app authorization, even where WeChat and its Official Account are
    configured, and signs the member in."""
    gw: WeComSite = request.getfixturevalue(deployment)
    browser = gw.browser(IN_APP_UAS[ua])
    target = gw.begin(browser, "/inbox")
    base, query, fragment = url_parts(target)
    assert base == gw.sim + "/connect/oauth2/authorize"
    assert query == {
        "appid": CORP_ID,
        "redirect_uri": gw.url + CALLBACK,
        "response_type": "code",
        "scope": "snsapi_base",
        "state": query["state"],
        "agentid": str(AGENT_ID),
    }
    assert fragment == "wechat_redirect"
    callback = browser.get(gw.pick(target, "ZhangSan", browser.user_agent))
    assert location(callback) == gw.url + "/inbox"
    seen = identity_of(gw, browser, "/inbox")
    assert seen["X-WeChat-Provider"] == "wecom"
    assert seen["X-WeChat-UserID"] == "ZhangSan"


def test_inside_wechat_the_official_account_still_signs_in(both: WeComSite) -> None:
    """WeChat's own browser (no ``wxwork``) keeps WeChat's Official Account flow; the
    user's requests say ``X-WeChat-Provider: wechat``."""
    oa = both.wechat.app_of_kind("official_account")
    browser = both.browser(WECHAT_UA)
    target = both.begin(browser, "/news")
    base, query, _ = url_parts(target)
    assert base == both.sim + "/connect/oauth2/authorize"
    assert query["appid"] == oa.app_id
    assert location(browser.get(both.pick(target, "alice", WECHAT_UA))) == both.url + "/news"
    seen = identity_of(both, browser, "/news")
    assert seen["X-WeChat-Provider"] == "wechat"
    assert seen["X-WeChat-AppID"] == oa.app_id
    assert seen["X-WeChat-OpenID"]
    assert "X-WeChat-UserID" not in seen and "X-WeChat-CorpID" not in seen


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ("WeCom", "WeChat", "Open WeCom&#x27;s sign-in page", "Open WeChat&#x27;s QR page")),
        ("zh", ("企业微信", "微信", "打开企业微信登录页面", "打开微信二维码页面")),
    ],
)
def test_with_both_configured_a_browser_gets_a_choice(
    both: WeComSite, lang: str, words: tuple[str, ...]
) -> None:
    """A normal browser gets the gateway's page offering both, in its language, each way
    in with its own state, WeCom's QR page framed in that language."""
    browser = both.browser()
    page = browser.get(f"{both.url}/_gateway/login?rd=/both&lang={lang}")
    assert page.status_code == 200, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assert f'<html lang="{"zh-CN" if lang == "zh" else "en"}"' in page.text
    for word in words:
        assert word in page.text, word
    found = choice_links(page.text)
    assert set(found) == {"wecom", "wechat", "frame"}, found
    wecom_base, wecom, _ = url_parts(found["wecom"])
    wechat_base, wechat, _ = url_parts(found["wechat"])
    frame_base, frame, _ = url_parts(found["frame"])
    assert wecom_base == both.sim + "/wwlogin/sso/login"
    assert wechat_base == both.sim + "/connect/qrconnect"
    assert frame_base == both.sim + "/wwopen/sso/qrConnect"
    assert wechat["appid"] == both.wechat.app_of_kind("website").app_id
    assert wecom["redirect_uri"] == wechat["redirect_uri"] == both.url + CALLBACK
    assert frame["state"] == wecom["state"] != wechat["state"]
    assert frame["login_type"] == "jssdk" and frame["lang"] == lang
    assert set_cookie(page, COOKIE + "_login") is not None


def test_from_the_choice_either_way_signs_in(both: WeComSite) -> None:
    """Both states of the page stay valid: WeCom through its link in one browser, WeChat
    through its link in another; each request says which provider signed the user in."""
    staff = both.browser()
    links = choice_links(staff.get(both.url + "/_gateway/login?rd=/both").text)
    assert location(staff.get(both.pick(links["wecom"], "lisi"))) == both.url + "/both"
    seen = identity_of(both, staff, "/both")
    assert seen["X-WeChat-Provider"] == "wecom"
    assert seen["X-WeChat-UserID"] == "lisi"

    guest = both.browser()
    links = choice_links(guest.get(both.url + "/_gateway/login?rd=/both").text)
    assert location(guest.get(both.pick(links["wechat"], "alice"))) == both.url + "/both"
    seen = identity_of(both, guest, "/both")
    assert seen["X-WeChat-Provider"] == "wechat"
    assert seen["X-WeChat-AppID"] == both.wechat.app_of_kind("website").app_id
    assert seen["X-WeChat-OpenID"]
    assert "X-WeChat-UserID" not in seen


def test_the_same_browser_can_use_the_other_way_from_the_same_page(both: WeComSite) -> None:
    """One page, two pending logins: using the WeChat one does not spend the WeCom one's
    state, and each callback is answered for its own provider."""
    browser = both.browser()
    links = choice_links(browser.get(both.url + "/_gateway/login?rd=/both").text)
    wechat_callback = both.pick(links["wechat"], "alice")
    wecom_callback = both.pick(links["wecom"], "ZhangSan")
    assert location(browser.get(wechat_callback)) == both.url + "/both"
    assert identity_of(both, browser, "/both")["X-WeChat-Provider"] == "wechat"
    assert location(browser.get(wecom_callback)) == both.url + "/both"
    assert identity_of(both, browser, "/both")["X-WeChat-UserID"] == "ZhangSan"


# --- 4. who is refused, and why --------------------------------------------------------

NOT_A_MEMBER = ("Not a member of this company", "您不是本企业成员")
INACTIVE = ("Your WeCom account is not active", "您的企业微信账号未启用")
INVISIBLE = ("This application is not available to you", "此应用对您不可见")


@pytest.mark.parametrize("api", [False, True], ids=["page", "json"])
@pytest.mark.parametrize(
    ("user", "why"),
    [("partner", NOT_A_MEMBER), ("WangWu", INACTIVE), ("SunQi", INACTIVE)],
    ids=["non-member", "disabled", "not-activated"],
)
def test_refused_sign_ins(site: WeComSite, user: str, why: tuple[str, str], api: bool) -> None:
    """Someone outside the company (no ``allow_external``), a disabled and a not-activated
    member: a 403 saying why, and no session."""
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/app"), user)
    reply = browser.get(callback_url, headers=JSON if api else {})
    assert_refused(reply, browser, *why, api=api)
    assert location(browser.get(site.url + "/app")).startswith(site.url + "/_gateway/login")


def test_a_member_outside_the_apps_visibility_in_the_wecom_client(site: WeComSite) -> None:
    """Inside the client WeCom hands out a code for anyone (``snsapi_base``); ``user/get``
    then says the member is not visible to the app (60011): refused."""
    browser = site.browser(WECOM_UA)
    callback_url = site.pick(site.begin(browser, "/app"), "Zhao.Liu", WECOM_UA)
    assert_refused(browser.get(callback_url), browser, *INVISIBLE, api=False)
    assert site.outcomes("user_get") == [60011]


def test_a_member_taken_out_of_visibility_during_the_sign_in(site: WeComSite) -> None:
    """The admin narrows the app's visibility between the QR scan and the callback."""
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/app"), "ZhangSan")
    site.app(visible_departments=[4])
    try:
        reply = browser.get(callback_url, headers=JSON)
    finally:
        site.app(visible_departments=[2])
    assert_refused(reply, browser, *INVISIBLE, api=True)


@pytest.mark.parametrize(
    ("errcode", "why"), [(60011, INVISIBLE), (60021, INVISIBLE), (60111, NOT_A_MEMBER)]
)
def test_user_get_refusals(site: WeComSite, errcode: int, why: tuple[str, str]) -> None:
    """``user/get`` saying the member is not visible (60011, 60021) or not found (60111)
    is a refusal saying so, not a WeCom failure."""
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/app"), "lisi")
    site.fault(endpoint="user_get", mode="errcode", errcode=errcode)
    assert_refused(browser.get(callback_url), browser, *why, api=False)


def test_declining_at_wecom_gives_a_page_with_a_way_back(site: WeComSite) -> None:
    """WeCom sends a person who declines back with the state and no code: 401, a link to
    try again, no session, and WeCom's API is not called."""
    browser = site.browser()
    callback_url = site.deny(site.begin(browser, "/app"))
    assert "code=" not in callback_url
    reply = browser.get(callback_url)
    assert reply.status_code == 401, reply.text[:300]
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "<h1>Sign-in cancelled</h1>" in reply.text
    assert 'href="' + site.url + '/_gateway/login?rd=%2Fapp"' in reply.text
    assert_no_session_set(reply)
    assert site.calls() == []


def test_declining_at_wecom_is_not_called_declining_in_wechat(site: WeComSite) -> None:
    """errors.py: "nobody is told WeChat failed when it was WeCom": the page says WeCom,
    in both languages."""
    browser = site.browser()
    reply = browser.get(site.deny(site.begin(browser, "/app")))
    assert reply.status_code == 401
    assert "You did not confirm the sign-in in WeCom." in reply.text
    assert "您没有在企业微信中确认登录" in reply.text
    assert "in WeChat" not in reply.text


def test_allow_external_signs_in_a_non_member_by_openid(qrconnect: WeComSite) -> None:
    """With ``allow_external`` someone outside the company is signed in with WeCom's
    openid and the corp: no userid, no departments."""
    openid = qrconnect.server.simulator.openid("partner")
    browser = qrconnect.browser()
    callback = browser.get(qrconnect.pick(qrconnect.begin(browser, "/shared"), "partner"))
    assert location(callback) == qrconnect.url + "/shared"
    seen = identity_of(qrconnect, browser, "/shared")
    assert seen["X-WeChat-Provider"] == "wecom"
    assert seen["X-WeChat-CorpID"] == CORP_ID
    assert seen["X-WeChat-OpenID"] == openid
    for absent in ("X-WeChat-UserID", "X-WeChat-Departments", "X-WeChat-AppID"):
        assert absent not in seen
    info = browser.get(qrconnect.url + "/_gateway/userinfo").json()
    assert (info["provider"], info["openid"], info["corp_id"]) == ("wecom", openid, CORP_ID)


# --- 5. allow lists --------------------------------------------------------------------


def test_allow_list_by_userid_in_any_case(allow: WeComSite) -> None:
    """``access.allow: [wecom:zhangsan]`` lets ``ZhangSan`` in and refuses lisi."""
    browser = allow.signed_in("ZhangSan", "/home")
    assert identity_of(allow, browser, "/home")["X-WeChat-UserID"] == "ZhangSan"

    refused = allow.browser()
    reply = allow.login(refused, "lisi", "/home")
    assert reply.status_code == 403, reply.text[:300]
    assert "userid: lisi" in reply.text
    assert_no_session_set(reply)


@pytest.mark.parametrize("user", ["lisi", "ZhangSan"])
def test_allow_list_by_department_takes_the_departments_below(allow: WeComSite, user: str) -> None:
    """``wecom-dept:2`` on ``/rd/`` lets in members of departments 3 and 4, below 2."""
    browser = allow.signed_in(user, "/rd/board")
    assert identity_of(allow, browser, "/rd/board")["X-WeChat-UserID"] == user


def test_allow_list_by_department_refuses_other_departments(allow: WeComSite) -> None:
    """``qian-ba@hq`` (no department visible to the app) is refused on ``/rd/``; lisi,
    allowed there, is refused on ``/`` with its own list and keeps her session."""
    outsider = allow.browser()
    reply = allow.login(outsider, "qian-ba@hq", "/rd/board")
    assert reply.status_code == 403
    assert_no_session_set(reply)

    browser = allow.signed_in("lisi", "/rd/board")
    assert browser.get(allow.url + "/home").status_code == 403
    assert browser.get(allow.url + "/rd/board").status_code == 200


# --- 6. WeCom failing ------------------------------------------------------------------

BUSY = (503, "WeCom is busy")
FAILED = (502, "WeCom sign-in failed")
TIMED_OUT = (504, "WeCom did not answer")
UNREACHABLE = (502, "Cannot reach WeCom")
FAILURES: list[tuple[dict[str, Any], tuple[int, str]]] = [
    ({"endpoint": "auth_getuserinfo", "mode": "errcode", "errcode": -1, "times": 50}, BUSY),
    ({"endpoint": "auth_getuserinfo", "mode": "http_status", "status": 500}, FAILED),
    ({"endpoint": "auth_getuserinfo", "mode": "garbage"}, FAILED),
    ({"endpoint": "auth_getuserinfo", "mode": "delay", "delay": WECOM_TIMEOUT + 1}, TIMED_OUT),
    ({"endpoint": "auth_getuserinfo", "mode": "reset"}, UNREACHABLE),
    ({"endpoint": "user_get", "mode": "delay", "delay": WECOM_TIMEOUT + 1}, TIMED_OUT),
    ({"endpoint": "user_get", "mode": "http_status", "status": 502}, FAILED),
]


def fail_sign_in(
    site: WeComSite, fault: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[requests.Response, float, str, str, UABrowser]:
    """A sign-in whose callback meets ``fault``: (its answer, seconds it took, the
    gateway's log meanwhile, the callback URL, the browser)."""
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/work?x=1"), "ZhangSan")
    site.fault(**fault)
    mark = site.log_mark()
    started = time.monotonic()
    reply = browser.get(callback_url, headers=headers or {})
    elapsed = time.monotonic() - started
    return reply, elapsed, site.log_since(mark), callback_url, browser


@pytest.mark.parametrize(
    ("fault", "expected"),
    FAILURES,
    ids=[f"{f['endpoint']}-{f.get('errcode', f['mode'])}" for f, _ in FAILURES],
)
def test_wecom_failing_gives_a_clean_page_within_the_timeout(
    site: WeComSite, fault: dict[str, Any], expected: tuple[int, str]
) -> None:
    """Errcodes, HTTP errors, garbage, a reset and slowness at either call of the sign-in:
    the page of its class (502/503/504) within ``wecom.timeout``, with a way back to the
    page asked for, one warning naming the call, and nothing secret anywhere."""
    reply, elapsed, log, callback_url, browser = fail_sign_in(site, fault)
    status, heading = expected
    assert reply.status_code == status, (reply.status_code, reply.text[:300])
    assert reply.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{heading}</h1>" in reply.text
    assert elapsed < WECOM_TIMEOUT + SLACK, elapsed
    assert_no_session_set(reply)
    assert browser.session_value() is None
    assert 'href="' + site.url + "/_gateway/login?rd=%2Fwork%3Fx%3D1" in reply.text
    if status == 503:
        assert reply.headers["Retry-After"].isdigit()
    else:
        assert "Retry-After" not in reply.headers
    endpoint = fault["endpoint"].replace("_", "/", 1)
    assert f"WeCom {endpoint} call failed" in log
    for text in (reply.text, log):
        assert_nothing_secret(text, SECRET, SESSION_SECRET, code_of(callback_url))


def test_a_failure_answers_an_api_call_with_json(site: WeComSite) -> None:
    """The same failure as JSON for an API client, with the way back in."""
    reply, *_ = fail_sign_in(site, {"endpoint": "auth_getuserinfo", "mode": "garbage"}, JSON)
    assert reply.status_code == 502
    body = reply.json()
    assert body["error"] == "WeCom sign-in failed"
    assert body["login_url"] == site.url + "/_gateway/login?rd=%2Fwork%3Fx%3D1"


def test_the_rate_limit_says_when_to_come_back_and_keeps_the_token(site: WeComSite) -> None:
    """45009: 503 with Retry-After; asked once, and the token is not refetched (fetching
    one is limited too)."""
    site.signed_in("lisi")  # a token in the store
    site.clear_calls()
    reply, elapsed, *_ = fail_sign_in(
        site, {"endpoint": "auth_getuserinfo", "mode": "errcode", "errcode": 45009, "times": 50}
    )
    assert reply.status_code == 503
    assert "<h1>WeCom is busy</h1>" in reply.text
    assert reply.headers["Retry-After"] == "60"
    assert "Try again in about 60 seconds" in reply.text
    assert elapsed < WECOM_TIMEOUT + SLACK
    assert site.outcomes("auth_getuserinfo") == [45009]
    assert site.calls("gettoken") == []


def test_busy_is_retried_within_the_budget(site: WeComSite) -> None:
    """One -1 ("system busy") is retried after a backoff, and the member signs in."""
    site.signed_in("lisi")
    site.clear_calls()
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/retried"), "ZhangSan")
    site.fault(endpoint="auth_getuserinfo", mode="errcode", errcode=-1, times=1)
    assert location(browser.get(callback_url)) == site.url + "/retried"
    assert site.outcomes("auth_getuserinfo") == [-1, 0]


def test_a_replayed_callback_from_another_browser_is_refused_without_asking_wecom(
    site: WeComSite,
) -> None:
    """The state is bound to the browser that started the login: a copy of the callback
    URL in another browser is a 400 and no session, and WeCom is not asked; the browser
    that signed in replaying it just lands on its page again."""
    browser = site.browser()
    callback_url = site.pick(site.begin(browser, "/mine"), "lisi")
    assert location(browser.get(callback_url)) == site.url + "/mine"
    site.clear_calls()
    thief = site.browser()
    reply = thief.get(callback_url)
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "Traceback" not in reply.text
    assert_no_session_set(reply)
    assert thief.session_value() is None
    assert location(browser.get(callback_url)) == site.url + "/mine"
    assert site.calls() == []


def test_a_token_invalidated_early_is_refetched_once(site: WeComSite) -> None:
    """WeCom drops the app's token before it expires (40014): the sign-in still works,
    with one new token, which every worker then uses."""
    site.signed_in("ZhangSan")
    site.clear_calls()
    assert site.invalidate_tokens() >= 1
    site.signed_in("lisi")
    assert site.outcomes("auth_getuserinfo") == [40014, 0]
    assert site.outcomes("gettoken") == [0]
    for user in ("ZhangSan", "qian-ba@hq", "lisi", "ZhangSan"):
        site.signed_in(user)  # new connections: both workers
    assert site.outcomes("gettoken") == [0]


def test_nothing_secret_reaches_the_log(site: WeComSite) -> None:
    """Sign-ins that work, fail and are refused, in the browser and in the client: the
    log has no secret, code, state or access token (the simulator's are 128 characters:
    ``assert_nothing_secret`` refuses any run of 64 token characters)."""
    mark = site.log_mark()
    callbacks = []
    for user, user_agent in (("ZhangSan", WECOM_UA), ("lisi", WECOM_UA), ("WangWu", WECOM_UA)):
        browser = site.browser(user_agent)
        callbacks.append(site.pick(site.begin(browser), user, user_agent))
        browser.get(callbacks[-1])
    _, _, _, failed, _ = fail_sign_in(
        site, {"endpoint": "user_get", "mode": "errcode", "errcode": 40001, "times": 2}
    )
    callbacks.append(failed)
    log = site.log_since(mark)
    assert "gateway.audit" in log  # the sign-ins were logged
    secrets = [SECRET, SESSION_SECRET]
    for url in callbacks:
        secrets += [code_of(url), state_of(url)]
    assert_nothing_secret(log, *secrets)


_FAILED_BY = re.compile(r"\[(\d+)\] \[INFO\] gateway\.audit: sign-in failed ")


@pytest.fixture(params=["wrong-secret", "40091"])
def misconfigured(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: EchoUpstream,
) -> Iterator[tuple[WeComSite, str]]:
    """A gateway whose ``gettoken`` fails for good: a wrong secret (WeCom says 40001), or
    WeCom's old 40091 for it; with the secret it was given."""
    wrong = "Wr0ngSecretWr0ngSecretWr0ngSecretWr0ngSecr"
    secret = wrong if request.param == "wrong-secret" else SECRET
    for gw in deploy(tmp_path_factory, upstream, secret=secret):
        if request.param == "40091":
            gw.fault(endpoint="gettoken", mode="errcode", errcode=40091)
        yield gw, secret


def test_a_wrong_secret_is_remembered_and_not_tried_again(
    misconfigured: tuple[WeComSite, str],
) -> None:
    """The first sign-in gets the misconfiguration page (502) and one ERROR line naming the
    key to fix; the next ones, on either worker, fail the same at once without calling
    ``gettoken`` again: a wrong secret repeated gets the host's IP banned."""
    gw, secret = misconfigured
    mark = gw.log_mark()
    attempts = 0

    def another_attempt() -> bool:
        """One more sign-in (a new connection); True once both workers refused some."""
        nonlocal attempts
        attempts += 1
        browser = gw.browser()
        callback_url = gw.pick(gw.begin(browser), "ZhangSan")
        started = time.monotonic()
        reply = browser.get(callback_url)
        assert time.monotonic() - started < WECOM_TIMEOUT + SLACK
        assert reply.status_code == 502, reply.text[:300]
        assert "<h1>Sign-in is misconfigured</h1>" in reply.text
        assert_no_session_set(reply)
        assert_nothing_secret(reply.text, secret, code_of(callback_url))
        workers = set(_FAILED_BY.findall(gw.log_since(mark)))
        return attempts >= 3 and len(workers) == 2

    poll(another_attempt, timeout=15)
    assert len(gw.calls("gettoken")) == 1
    assert gw.calls("auth_getuserinfo") == []
    log = gw.log_since(mark)
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert errors and all("wecom.secret is wrong" in line for line in errors), errors
    assert len(errors) <= 2  # one per worker at most
    assert_nothing_secret(log, secret, SESSION_SECRET)


# --- 7. one token for all workers ------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[WeComSite]:
    yield from deploy(tmp_path_factory, upstream)


_SIGNED_IN_BY = re.compile(r"\[(\d+)\] \[INFO\] gateway\.audit: signed in ")


def test_concurrent_sign_ins_on_both_workers_share_one_token(fresh: WeComSite) -> None:
    """Sign-ins arriving together on an empty cache make one ``gettoken`` call, and later
    sign-ins on either worker use the same token."""
    browsers = [fresh.browser() for _ in range(10)]
    users = ["ZhangSan", "lisi", "qian-ba@hq"]
    callbacks = [
        fresh.pick(fresh.begin(b, "/t"), users[i % len(users)]) for i, b in enumerate(browsers)
    ]
    barrier = threading.Barrier(len(browsers))
    answers: list[Any] = [None] * len(browsers)

    def callback(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = browsers[index].get(callbacks[index]).status_code
        except Exception as exc:
            answers[index] = exc

    threads = [threading.Thread(target=callback, args=(i,)) for i in range(len(browsers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [302] * len(browsers)
    assert fresh.outcomes("gettoken") == [0]

    # Until both workers have signed someone in (each a new connection).
    def both_workers() -> bool:
        fresh.signed_in("lisi", "/t")
        return len(set(_SIGNED_IN_BY.findall(fresh.gateway.log()))) == 2

    poll(both_workers, timeout=10)
    assert fresh.outcomes("gettoken") == [0]


# --- 8. revalidation -------------------------------------------------------------------

INTERVAL = 1


@pytest.fixture(scope="module")
def revalidating_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream
) -> Iterator[WeComSite]:
    for gw in deploy(tmp_path_factory, upstream, session={"revalidate": f"{INTERVAL}s"}):
        # Two more active members: one for the outages, one for the remembered answer.
        gw.member("WangWu", status=1)
        gw.member("SunQi", status=1)
        yield gw


@pytest.fixture
def revalidating(revalidating_gateway: WeComSite) -> Iterator[WeComSite]:
    yield from clean(revalidating_gateway)


def test_a_disabled_member_loses_access_at_the_next_revalidation(revalidating: WeComSite) -> None:
    """Disabled by an admin right after signing in: once the interval is over the next
    request asks WeCom and is no longer let through: a page is sent to sign in, an API
    call and forward-auth get 401."""
    gw = revalidating
    page, api, auth = (gw.signed_in("ZhangSan", "/app") for _ in range(3))
    gw.clear_calls()
    gw.member("ZhangSan", status=2)
    try:
        took = poll(lambda: page.get(gw.url + "/app").status_code == 302, INTERVAL + 2)
        assert took <= INTERVAL + 1.5
        reply = page.get(gw.url + "/app")
        assert location(reply) == gw.url + "/_gateway/login?rd=%2Fapp"
        assert page.session_value() is None  # the cookie was cleared
        poll(lambda: api.get(gw.url + "/api/items", headers=JSON).status_code == 401, 3)
        assert "login_url" in api.get(gw.url + "/api/items", headers=JSON).json()
        poll(lambda: auth.get(gw.url + "/_gateway/auth").status_code == 401, 3)
    finally:
        gw.member("ZhangSan", status=1)
    # WeCom was asked (on one or both workers) and answered: status 2.
    assert gw.outcomes("user_get") in ([0], [0, 0])


def test_a_removed_member_loses_access(revalidating: WeComSite) -> None:
    """Removed from the company (``user/get``: 60111): the next check ends the session,
    an API call gets the 401 JSON and the cookie is cleared."""
    gw = revalidating
    browser = gw.signed_in("lisi", "/app")
    gw.clear_calls()
    gw.member("lisi", remove=True)
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/api/items", headers=JSON)
    assert reply.status_code == 401
    assert reply.json()["login_url"].startswith(gw.url + "/_gateway/login")
    cookie = set_cookie(reply, COOKIE)
    assert cookie is not None and (cookie.value == "" or cookie.attributes["max-age"] == "0")
    assert gw.outcomes("user_get") == [60111]


def test_a_moved_members_departments_follow(revalidating: WeComSite) -> None:
    """The member's record is read again: departments the app can now see appear."""
    gw = revalidating
    browser = gw.signed_in("qian-ba@hq", "/app")
    # Read from the cookie: a request now might revalidate, and the worker would remember
    # that answer for a few seconds.
    signed_in = browser.session()
    assert signed_in is not None and signed_in.departments == ()
    gw.clear_calls()
    gw.member("qian-ba@hq", departments=[5, 4])
    browser.age_session(INTERVAL + 1)
    reply = browser.get(gw.url + "/app")
    assert echo_of(reply).value("X-WeChat-Departments") == "4"
    assert set_cookie(reply, COOKIE) is not None  # re-issued
    assert gw.outcomes("user_get") == [0]


def test_a_member_disabled_after_a_confirmed_check_loses_access_at_the_next_one(
    revalidating: WeComSite,
) -> None:
    """docs/wecom.md: "one ``user/get`` call per session per interval". The session is
    confirmed once (its cookie re-issued), then the member is disabled: the next check, an
    interval later, on the same connection (the same worker), ends it."""
    gw = revalidating
    browser = gw.signed_in("SunQi", "/app")
    poll(lambda: set_cookie(browser.get(gw.url + "/app"), COOKIE) is not None, INTERVAL + 2)
    gw.member("SunQi", status=2)
    try:
        poll(lambda: browser.get(gw.url + "/app").status_code == 302, INTERVAL + 2)
    finally:
        gw.member("SunQi", status=1)


OUTAGES: list[dict[str, Any]] = [
    {"endpoint": "user_get", "mode": "reset"},
    {"endpoint": "user_get", "mode": "http_status", "status": 500},
    {"endpoint": "user_get", "mode": "errcode", "errcode": -1, "times": 50},
    {"endpoint": "user_get", "mode": "delay", "delay": WECOM_TIMEOUT + 0.5},
]


@pytest.fixture
def wait_out_the_pause() -> Iterator[None]:
    """After WeCom could not be asked, a worker leaves it alone for the interval."""
    yield
    time.sleep(INTERVAL)


@pytest.mark.usefixtures("wait_out_the_pause")
@pytest.mark.parametrize("fault", OUTAGES, ids=[str(f.get("errcode", f["mode"])) for f in OUTAGES])
def test_a_wecom_outage_keeps_the_session(revalidating: WeComSite, fault: dict[str, Any]) -> None:
    """WeCom cannot be asked when the session is due: it keeps working, unchanged, within
    ``wecom.timeout``, and the failed call was made."""
    gw = revalidating
    browser = gw.signed_in("WangWu", "/app")
    aged = browser.age_session(INTERVAL + 1)
    gw.clear_calls()
    gw.fault(**fault)
    started = time.monotonic()
    reply = browser.get(gw.url + "/app")
    assert time.monotonic() - started < WECOM_TIMEOUT + SLACK
    assert echo_of(reply).value("X-WeChat-UserID") == "WangWu"
    assert set_cookie(reply, COOKIE) is None
    assert browser.session() == aged
    # The call log's outcome: the errcode answered, or the fault (a delayed reply is a
    # success that came too late).
    outcome = {"errcode": fault.get("errcode"), "delay": 0}.get(fault["mode"], fault["mode"])
    assert gw.outcomes("user_get")[0] == outcome


# --- 9. the sessions command -----------------------------------------------------------


def sessions(site: WeComSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", *args, "-c", str(site.gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sessions_list_and_revoke_take_a_wecom_userid(site: WeComSite) -> None:
    """``--user wecom:USERID`` in any case finds the member's sessions and ends them on
    every worker within a second; the member can sign in again at once."""
    browser = site.signed_in("ZhangSan", "/app")
    session = browser.session()
    assert session is not None
    listed = sessions(site, "list", "--json", "--user", "wecom:ZHANGSAN")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    mine = [row for row in rows if row["sid"] == session.sid]
    assert len(mine) == 1, rows
    assert mine[0]["provider"] == "wecom"
    assert mine[0]["app_id"] == CORP_ID
    assert mine[0]["nickname"] == "张三"
    others = json.loads(sessions(site, "list", "--json", "--user", "wecom:lisi").stdout)
    assert session.sid not in {row["sid"] for row in others}

    revoked = sessions(site, "revoke", "--user", "wecom:zhangsan")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {len(rows)} session{'' if len(rows) == 1 else 's'}"

    def ended() -> bool:
        fresh = site.browser()  # a new connection each time: either worker
        fresh.jar = dict(browser.jar)
        return fresh.get(site.url + "/app").status_code == 302

    # Fresh connections may all reach the same worker; the browser's own keep-alive one
    # may be on the other, which learns of the revocation within its second too.
    def refused() -> bool:
        return browser.get(site.url + "/_gateway/auth").status_code == 401

    assert poll(lambda: all(ended() for _ in range(4)) and refused(), 3) < 1.5
    site.signed_in("ZhangSan", "/app")
    assert "Traceback" not in revoked.stderr + listed.stderr
