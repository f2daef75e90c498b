"""WeCom as an identity provider, against the WeCom simulator on a loopback socket: which
browser takes which flow, the URLs each flow sends it to, who is signed in and who is
refused (and with which page), the department scope behind ``wecom-dept:ID``, and
revalidation. Then what a WeCom session turns into: its cookie, its headers, its assertion
claims, allow lists and groups, and the ``wecom`` config section."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.auth.access import AllowList
from gateway.auth.session import Session, SessionCodec
from gateway.config.settings import ConfigError
from gateway.config.validate import validate
from gateway.errors import (
    MemberInactive,
    NotAMember,
    OutsideVisibility,
    WeComBusy,
    WeComFailed,
    WeComMisconfigured,
    WeComTimedOut,
)
from gateway.identity.assertion import assertion_claims
from gateway.identity.groups import Groups
from gateway.identity.headers import identity_headers
from gateway.providers.base import AuthorizationEnded, CannotRevalidate
from gateway.providers.wecom import AccessTokens, WeComClient
from gateway.providers.wecom.provider import DepartmentTree, WeComProvider
from gateway.simulator.wecom import (
    DEMO_AGENT_ID,
    DEMO_CORP_ID,
    WeComFault,
    WeComSimulator,
    WeComSimulatorServer,
)
from gateway.state.sqlite import SqliteStore

SESSION_SECRET = "unit-test-session-secret-0123456789abcdef"
CALLBACK = "https://intranet.example.com/_gateway/callback"
RETRY = (("Try again", "https://intranet.example.com/_gateway/login"),)
SIM = WeComSimulator.default()
WXWORK_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " wxwork/4.1.22 MicroMessenger/7.0.1 MailPlugin_Electron WeMail embeddedwxwork"
)
WECHAT_UA = "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 MicroMessenger/8.0.47"


@pytest.fixture(scope="module")
def server() -> Iterator[WeComSimulatorServer]:
    with WeComSimulatorServer(SIM) as running:
        yield running


@pytest.fixture
def sim(server: WeComSimulatorServer) -> Iterator[WeComSimulator]:
    SIM.reset()
    yield SIM
    SIM.reset()


@pytest.fixture
def client(server: WeComSimulatorServer, tmp_path: Path) -> Iterator[WeComClient]:
    tokens = AccessTokens(
        SqliteStore(tmp_path / "state.db", session_max_age=3600), SessionCodec(SESSION_SECRET)
    )
    made = WeComClient(
        DEMO_CORP_ID,
        DEMO_AGENT_ID,
        SIM.app(DEMO_AGENT_ID).secret,
        api_base=server.url,
        timeout=2.0,
        tokens=tokens,
    )
    yield made
    made.close()


def provider(client: WeComClient, *, in_app: bool = False, **kw: Any) -> WeComProvider:
    options: dict[str, Any] = {
        "timeout": 2.0,
        "allow_external": False,
        "login_base": "https://login.example",
        "qrconnect_base": "https://qr.example",
        "open_base": "https://open.example",
    }
    return WeComProvider(client, DepartmentTree(client), in_app=in_app, **(options | kw))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# --- which flow, which URL ------------------------------------------------------------------


def test_the_in_app_flow_serves_the_wecom_client_only(client: WeComClient) -> None:
    """WeCom's User-Agent says both wxwork and MicroMessenger: wxwork decides, any case."""
    in_app, web = provider(client, in_app=True), provider(client)
    assert in_app.serves({"HTTP_USER_AGENT": WXWORK_UA})
    assert in_app.serves({"HTTP_USER_AGENT": "Mozilla/5.0 WXWorkLocal/3.0"})
    assert not in_app.serves({"HTTP_USER_AGENT": WECHAT_UA})
    assert not in_app.serves({})
    assert web.serves({"HTTP_USER_AGENT": WECHAT_UA}) and web.serves({})
    assert (in_app.key, web.key) == ("wecom_app", "wecom")
    assert in_app.in_app and not web.in_app


def test_the_urls_of_each_flow(client: WeComClient) -> None:
    sso = provider(client).authorize_url(CALLBACK, "S1")
    assert sso.startswith("https://login.example/wwlogin/sso/login?")
    assert query(sso) == {
        "login_type": "CorpApp",
        "appid": DEMO_CORP_ID,
        "agentid": str(DEMO_AGENT_ID),
        "redirect_uri": CALLBACK,
        "state": "S1",
    }
    assert "redirect_uri=https%3A%2F%2Fintranet.example.com%2F_gateway%2Fcallback" in sso
    legacy = provider(client, web_login="qrconnect").authorize_url(CALLBACK, "S2")
    assert legacy.startswith("https://qr.example/wwopen/sso/qrConnect?")
    assert query(legacy)["state"] == "S2" and "login_type" not in query(legacy)
    in_app = provider(client, in_app=True).authorize_url(CALLBACK, "S3")
    assert in_app.startswith("https://open.example/connect/oauth2/authorize?")
    assert in_app.endswith("#wechat_redirect")
    assert query(in_app.partition("#")[0]) == {
        "appid": DEMO_CORP_ID,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "snsapi_base",
        "state": "S3",
        "agentid": str(DEMO_AGENT_ID),
    }
    panel = provider(client).panel_url(CALLBACK, "S4", lang="en")
    assert query(panel)["login_type"] == "jssdk" and query(panel)["lang"] == "en"
    assert provider(client).embedded_login(CALLBACK, "S5") is None


# --- signing in -----------------------------------------------------------------------------


def test_a_member_is_signed_in_with_name_departments_and_scope(
    sim: WeComSimulator, client: WeComClient
) -> None:
    """lisi is in 前端组 (4) then 平台组 (3), both under 研发中心 (2) under the root (1)."""
    code = sim.mint_code("LISI", CALLBACK)
    identity = provider(client).sign_in(code, retry=RETRY)
    assert identity.provider == "wecom"
    assert identity.userid == "lisi"  # the case WeCom keeps, not the case it was asked in
    assert identity.subject == "" and identity.unionid is None
    assert identity.app_id == DEMO_CORP_ID
    assert identity.nickname == "李四\x14🚀"
    assert identity.departments == (4, 3)
    assert identity.dept_scope == (1, 2, 3, 4)


def test_a_member_visible_by_name_only_has_no_departments(
    sim: WeComSimulator, client: WeComClient
) -> None:
    identity = provider(client).sign_in(sim.mint_code("qian-ba@hq", CALLBACK), retry=RETRY)
    assert identity.userid == "qian-ba@hq"
    assert identity.departments == () and identity.dept_scope == ()


@pytest.mark.parametrize(
    ("userid", "refusal"), [("WangWu", MemberInactive), ("SunQi", MemberInactive)]
)
def test_a_member_who_is_not_active_is_refused(
    sim: WeComSimulator, client: WeComClient, userid: str, refusal: type[Exception]
) -> None:
    with pytest.raises(refusal) as refused:
        provider(client).sign_in(sim.mint_code(userid, CALLBACK), retry=RETRY)
    assert refused.value.status == 403  # type: ignore[attr-defined]
    assert refused.value.subject == f"wecom:{userid}"  # type: ignore[attr-defined]


def test_a_member_outside_the_apps_visibility_is_refused(
    sim: WeComSimulator, client: WeComClient
) -> None:
    """赵六 is in 华南销售 (6), outside the app's 研发中心: user/get answers 60011."""
    with pytest.raises(OutsideVisibility) as refused:
        provider(client).sign_in(sim.mint_code("Zhao.Liu", CALLBACK), retry=RETRY)
    assert refused.value.status == 403


def test_someone_outside_the_company_is_refused_unless_allowed(
    sim: WeComSimulator, client: WeComClient
) -> None:
    with pytest.raises(NotAMember):
        provider(client).sign_in(sim.mint_code("partner", CALLBACK), retry=RETRY)
    identity = provider(client, allow_external=True).sign_in(
        sim.mint_code("partner", CALLBACK), retry=RETRY
    )
    assert identity.userid is None and identity.subject == sim.openid("partner")
    assert identity.app_id == DEMO_CORP_ID


@pytest.mark.parametrize(
    ("fault", "page", "status"),
    [
        (WeComFault("auth_getuserinfo", "errcode", errcode=40029), WeComFailed, 502),
        (WeComFault("auth_getuserinfo", "errcode", errcode=50001), WeComMisconfigured, 502),
        (WeComFault("gettoken", "errcode", errcode=40091), WeComMisconfigured, 502),
        (WeComFault("auth_getuserinfo", "errcode", errcode=45009), WeComBusy, 503),
        (WeComFault("user_get", "errcode", errcode=-1, times=10), WeComBusy, 503),
        (WeComFault("auth_getuserinfo", "http_status", status=500), WeComFailed, 502),
        (WeComFault("auth_getuserinfo", "garbage"), WeComFailed, 502),
        (WeComFault("auth_getuserinfo", "delay", delay=3.0), WeComTimedOut, 504),
    ],
    ids=["40029", "50001", "40091", "45009", "busy", "http500", "garbage", "slow"],
)
def test_wecom_failures_become_pages(
    sim: WeComSimulator,
    client: WeComClient,
    fault: WeComFault,
    page: type[Exception],
    status: int,
) -> None:
    sim.add_fault(fault)
    with pytest.raises(page) as failed:
        provider(client).sign_in(sim.mint_code("ZhangSan", CALLBACK), retry=RETRY)
    assert type(failed.value) is page
    assert failed.value.status == status  # type: ignore[attr-defined]
    assert failed.value.actions == RETRY  # type: ignore[attr-defined]
    if status == 503:
        assert any(name == "Retry-After" for name, _ in failed.value.extra_headers)  # type: ignore[attr-defined]


def test_the_department_tree_is_read_once_for_many_sign_ins(
    sim: WeComSimulator, client: WeComClient
) -> None:
    web = provider(client)
    for user in ("ZhangSan", "lisi", "ZhangSan"):
        web.sign_in(sim.mint_code(user, CALLBACK), retry=RETRY)
    assert len(sim.calls("department_list")) == 1


def test_without_the_tree_a_member_is_in_their_own_departments(
    sim: WeComSimulator, client: WeComClient
) -> None:
    sim.add_fault(WeComFault("department_list", "errcode", errcode=48002))
    identity = provider(client).sign_in(sim.mint_code("lisi", CALLBACK), retry=RETRY)
    assert identity.dept_scope == (3, 4)


# --- revalidation ---------------------------------------------------------------------------


def member_session(userid: str = "lisi", departments: tuple[int, ...] = (4, 3)) -> Session:
    return Session(
        "",
        DEMO_CORP_ID,
        None,
        "李四",
        "",
        1_700_000_000,
        4_000_000_000,
        provider="wecom",
        sid="sid1",
        userid=userid,
        departments=departments,
        dept_scope=(1, 2, *departments),
    )


def test_revalidation_keeps_an_active_member_and_updates_departments(
    sim: WeComSimulator, client: WeComClient
) -> None:
    sim.update_member("lisi", departments=(3,))
    fresh = provider(client).revalidate(member_session())
    assert fresh.userid == "lisi" and fresh.departments == (3,)
    assert fresh.dept_scope == (1, 2, 3) and fresh.sid == "sid1"


@pytest.mark.parametrize("change", ["disable", "remove", "hide"])
def test_revalidation_ends_a_member_who_left(
    sim: WeComSimulator, client: WeComClient, change: str
) -> None:
    if change == "disable":
        sim.update_member("lisi", status=2)
    elif change == "remove":
        sim.remove_member("lisi")
    else:
        sim.update_app(DEMO_AGENT_ID, visible_departments=[5], visible_users=[])
    with pytest.raises(AuthorizationEnded):
        provider(client).revalidate(member_session())


def test_a_wecom_outage_does_not_end_sessions(sim: WeComSimulator, client: WeComClient) -> None:
    sim.add_fault(WeComFault("user_get", "http_status", status=502, times=10))
    with pytest.raises(CannotRevalidate):
        provider(client).revalidate(member_session())


# --- what a WeCom session becomes -----------------------------------------------------------


def test_a_member_session_survives_its_cookie() -> None:
    codec = SessionCodec(SESSION_SECRET, clock=lambda: 1_800_000_000.0)
    session = member_session()
    assert codec.decode(codec.encode(session)) == session
    wechat = Session("oA", "wx1", None, "n", "", 1_700_000_000, 4_000_000_000, sid="s")
    assert codec.decode(codec.encode(wechat)) == wechat


def test_a_member_session_has_wecom_headers_only() -> None:
    headers = dict(identity_headers(member_session()))
    assert headers == {
        "X-WeChat-UserID": "lisi",
        "X-WeChat-CorpID": DEMO_CORP_ID,
        "X-WeChat-Departments": "4,3",
        "X-WeChat-Nickname": "%E6%9D%8E%E5%9B%9B",
        "X-WeChat-Avatar": "",
        "X-WeChat-Provider": "wecom",
    }
    assert "X-WeChat-Departments" not in dict(identity_headers(member_session(departments=())))
    outsider = Session("wmOpen", DEMO_CORP_ID, None, "", "", 1, 4_000_000_000, provider="wecom")
    assert dict(identity_headers(outsider)) == {
        "X-WeChat-CorpID": DEMO_CORP_ID,
        "X-WeChat-OpenID": "wmOpen",
        "X-WeChat-Nickname": "",
        "X-WeChat-Avatar": "",
        "X-WeChat-Provider": "wecom",
    }


def test_a_member_assertion_names_the_member() -> None:
    claims = assertion_claims(
        member_session(), issuer="https://gw", audience="https://gw", groups=("rd",), now=10
    )
    assert claims["sub"] == "wecom:lisi" and claims["provider"] == "wecom"
    assert claims["userid"] == "lisi" and claims["corp_id"] == DEMO_CORP_ID
    assert claims["departments"] == [4, 3] and claims["groups"] == ["rd"]
    assert not {"openid", "app_id", "unionid"} & set(claims)


def test_allow_lists_and_groups_know_members_and_departments() -> None:
    lisi = member_session()
    assert AllowList(["wecom:LiSi"]).allows(lisi)
    assert AllowList(["wecom-dept:2"]).allows(lisi)  # 前端组 is below 研发中心
    assert not AllowList(["wecom-dept:5", "wecom:zhangsan", "lisi"]).allows(lisi)
    groups = Groups({"rd": ["wecom-dept:2"], "ops": ["wecom:LISI"], "sales": ["wecom-dept:5"]})
    assert groups.of(lisi) == ("ops", "rd")
    assert AllowList(["group:ops"], groups=groups).allows(lisi)
    assert lisi.subject == "wecom:lisi" and member_session("LiSi").user_key == "wecom:lisi"


# --- the wecom section ----------------------------------------------------------------------


def config(**sections: Any) -> dict[str, Any]:
    return {
        "public_url": "https://intranet.example.com",
        "session": {"secret": SESSION_SECRET},
        "upstreams": [{"prefix": "/", "url": "http://127.0.0.1:3000"}],
        **sections,
    }


WECOM = {"corp_id": DEMO_CORP_ID, "agent_id": 1000002, "secret": "s3cret"}


def test_wecom_alone_is_a_complete_config() -> None:
    settings = validate(config(wecom=WECOM), {})
    assert settings.wechat is None
    assert settings.wecom is not None and settings.wecom.agent_id == 1000002
    assert settings.wecom.web_login == "sso" and not settings.wecom.allow_external
    assert settings.provider_timeout == 5.0


def test_neither_provider_is_an_error_naming_wechat() -> None:
    with pytest.raises(ConfigError) as failed:
        validate(config(), {})
    assert "wechat.app_id: required" in failed.value.problems


def test_a_broken_wecom_section_says_every_problem_without_values() -> None:
    with pytest.raises(ConfigError) as failed:
        validate(
            config(
                wecom={
                    "corp_id": "ww bad!",
                    "secret": "hunter2-secret",
                    "web_login": "popup",
                    "timeout": "0s",
                    "api_base": "ftp://x",
                    "colour": "blue",
                }
            ),
            {},
        )
    problems = failed.value.problems
    joined = "\n".join(problems)
    for path in ("wecom.corp_id", "wecom.agent_id", "wecom.web_login", "wecom.timeout"):
        assert path in joined
    assert "wecom.api_base" in joined and "wecom.colour: unknown key" in joined
    assert "hunter2" not in joined and "ww bad!" not in joined


def test_a_malformed_wecom_entry_in_an_allow_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as failed:
        validate(
            config(
                wecom=WECOM,
                access={"allow": ["wecom:ZhangSan", "wecom:bad user", "wecom-dept:two"]},
            ),
            {},
        )
    assert [p.split(":", 1)[0] for p in failed.value.problems] == [
        "access.allow[1]",
        "access.allow[2]",
    ]


def test_a_wecom_refusal_is_audited_with_the_userid(
    sim: WeComSimulator, client: WeComClient
) -> None:
    from gateway.audit import reason_of

    with pytest.raises(MemberInactive) as refused:
        provider(client).sign_in(sim.mint_code("WangWu", CALLBACK), retry=RETRY)
    assert reason_of(refused.value) == "member_inactive"
    assert reason_of(WeComBusy(retry_after=5)) == "wecom_busy"
