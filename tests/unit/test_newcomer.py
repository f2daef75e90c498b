"""What a newcomer tripped over first, in-process: ``access.public`` rules that cannot mean
what they say, the simulator's pages in the browser's language, control characters in the
test identities, the demo's sample app, and the command with nothing or no config file.

The callback pages' language switch is ``tests/unit/test_pages.py`` (the page) and
``tests/e2e/test_newcomer.py`` (a real sign-in); the demo in a browser is
``tests/browser/test_demo.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from werkzeug.test import Client, TestResponse

from gateway import cli
from gateway.auth.access import AccessPolicy
from gateway.config import AccessSettings, ConfigError, parse_settings
from gateway.demo import sample_app
from gateway.simulator import Simulator
from gateway.simulator.pages import page_lang, visible
from gateway.web.pages import stylesheet
from tests.helpers.cli import main, valid_config
from tests.helpers.support import APP_SECRET, SESSION_SECRET

ENV_VAR = "WECHAT_GATEWAY_CONFIG"
WEB = "wx5e1a2b3c4d5e6f70"
CALLBACK = "https%3A%2F%2Fintranet.example.com%2F_gateway%2Fcallback"


# --- access.public: a rule that cannot mean what it says is a config error ----------------


def problems_of(public: list[str]) -> list[str]:
    config: dict[str, Any] = valid_config()
    config["access"] = {"public": public}
    try:
        parse_settings(yaml.safe_dump(config), environ={})
    except ConfigError as error:
        return list(error.problems)
    return []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("GIT /x", "not an HTTP method: did you mean GET?"),
        ("PSOT /api/hooks", "not an HTTP method: did you mean POST?"),
        ("Gett /x", "not an HTTP method: did you mean GET?"),
        ("OPTION /x", "not an HTTP method: did you mean OPTIONS?"),
        ("PROPFIN /dav/", "not an HTTP method: did you mean PROPFIND?"),
        ("FOO /x", "not an HTTP method: the method must be one such as GET or POST"),
        ("ALL /x", "to match every method, leave the method out"),
        ("* /x", "to match every method, leave the method out"),
        ("GET POST /x", "one method per rule: write a rule for each method"),
        ("GET, POST /x", "one method per rule: write a rule for each method"),
        ("GET|HEAD /x", "one method per rule: write a rule for each method"),
        ("/static/ /assets/", "a path cannot contain spaces"),
        ("GET /my docs/", "a path cannot contain spaces"),
        ("/tab\there", "a path cannot contain spaces"),
        ("static/", "must be a path starting with /"),
        ("GET", "must be a path starting with /"),
    ],
)
def test_a_public_rule_that_cannot_mean_what_it_says_is_a_config_error(
    rule: str, problem: str
) -> None:
    problems = problems_of(["/ok/", rule])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"access.public[1]: {problem}"), problems
    # Like every config message, it names the key, never the value.
    if rule not in ("GET", "* /x"):
        assert rule not in problems[0]


def test_every_bad_rule_is_reported_at_once() -> None:
    problems = problems_of(["GIT /a", "/b c", "/fine/", "PSOT /d"])
    assert [p.split(":", 1)[0] for p in problems] == [
        "access.public[0]",
        "access.public[1]",
        "access.public[3]",
    ]


@pytest.mark.parametrize(
    ("rule", "method", "path", "public"),
    [
        ("/static/", "POST", "/static/a.css", True),
        ("GET /static/", "GET", "/static/a.css", True),
        ("GET /static/", "HEAD", "/static/a.css", True),
        ("GET /static/", "POST", "/static/a.css", False),
        ("get /static/", "GET", "/static/a.css", True),
        ("  POST   /hooks  ", "POST", "/hooks/x", True),
        ("PROPFIND /dav/", "PROPFIND", "/dav/cal", True),
        ("VERSION-CONTROL /dav/", "VERSION-CONTROL", "/dav/cal", True),
        ("~^/my docs/", "GET", "/my%20docs/a", True),
        ("POST ~^/hooks/[a-z]+$", "POST", "/hooks/abc", True),
        ("POST ~^/hooks/[a-z]+$", "GET", "/hooks/abc", False),
    ],
)
def test_the_valid_forms_still_work(rule: str, method: str, path: str, public: bool) -> None:
    assert problems_of([rule]) == []
    policy = AccessPolicy(AccessSettings(public=(rule,)))
    assert policy.is_public(method, path) is public


# --- the simulator's pages speak the browser's language -----------------------------------


@pytest.fixture
def client() -> Client:
    return Client(Simulator.default())


def qrconnect(
    client: Client, query: str = "", language: str | None = None, appid: str = WEB
) -> TestResponse:
    headers = {"Accept-Language": language} if language else {}
    return client.get(
        f"/connect/qrconnect?appid={appid}&redirect_uri={CALLBACK}&response_type=code"
        f"&scope=snsapi_login&state=abc{query}",
        headers=headers,
    )


@pytest.mark.parametrize(
    ("query", "language", "chinese"),
    [
        # ?lang= wins, in WeChat's spelling or the gateway pages'.
        ("&lang=cn", "en-US,en;q=0.9", True),
        ("&lang=zh-CN", "en-US", True),
        ("&lang=en", "zh-CN,zh;q=0.9", False),
        # Then the browser's language, q-values honoured.
        ("", "zh-CN,zh;q=0.9,en;q=0.8", True),
        ("", "en;q=0.5,zh-TW;q=0.9", True),
        ("", "en-GB,en;q=0.9", False),
        # Then English, as on the gateway's pages.
        ("", None, False),
        ("", "fr-FR", False),
    ],
)
def test_the_qr_page_follows_lang_then_the_browser(
    client: Client, query: str, language: str | None, chinese: bool
) -> None:
    page = qrconnect(client, query, language).text
    if chinese:
        assert '<html lang="zh-CN">' in page and "以 Alice 身份扫码" in page
        assert "手机链接：" in page and "Scan as" not in page
    else:
        assert '<html lang="en">' in page and "Scan as Alice" in page
        assert "Phone link:" in page and "身份扫码" not in page


def test_inside_wxlogin_frame_no_lang_is_chinese_whatever_the_browser(client: Client) -> None:
    """wxLogin.js passes ``lang=en`` or nothing: the embedding page has chosen already."""
    frame = "&login_type=jssdk&self_redirect=false"
    assert "以 Alice 身份扫码" in qrconnect(client, frame, "en-US").text
    assert "Scan as Alice" in qrconnect(client, frame + "&lang=en", "zh-CN").text


def test_the_phone_and_error_pages_follow_the_browser_too(client: Client) -> None:
    page = qrconnect(client, "&lang=en").text
    found = re.search(r'href="http://localhost(/connect/confirm/[^"]+)"', page)
    assert found is not None
    phone = found.group(1)
    chinese = client.get(phone, headers={"Accept-Language": "zh-CN"}).text
    assert "<h1>确认登录</h1>" in chinese and "以 Alice 身份确认登录" in chinese
    assert "Log in as" not in chinese
    english = client.get(phone + "?lang=en", headers={"Accept-Language": "zh-CN"}).text
    assert "<h1>Confirm login</h1>" in english and "Log in as Alice" in english
    declined = client.post(phone, data={"cancel": "1"}, headers={"Accept-Language": "zh"})
    assert "<h1>已取消</h1>" in declined.text
    gone = client.get(phone, headers={"Accept-Language": "zh"})
    assert gone.status_code == 410 and "<h1>二维码已失效</h1>" in gone.text
    assert "QR code expired" in client.get(phone, headers={"Accept-Language": "en"}).text

    unknown = "wx0000000000000000"
    refused = qrconnect(client, "", "zh-CN", appid=unknown).text
    assert "<h1>出错了</h1>" in refused and "AppID 参数错误" in refused
    assert "invalid appid" not in refused
    refused = qrconnect(client, "&lang=en", "zh-CN", appid=unknown).text
    assert "<h1>Oops</h1>" in refused and "invalid appid" in refused and "参数" not in refused


def test_the_in_wechat_pages_and_the_index_follow_the_browser(client: Client) -> None:
    oa = "wx9c8b7a6f5e4d3c21"
    authorize = (
        f"/connect/oauth2/authorize?appid={oa}&redirect_uri={CALLBACK}&response_type=code"
        "&scope=snsapi_userinfo&state=xyz"
    )
    chinese = client.get(authorize, headers={"Accept-Language": "zh-CN"}).text
    assert "<h1>授权</h1>" in chinese and "允许，以 Alice 身份" in chinese
    english = client.get(authorize, headers={"Accept-Language": "en"}).text
    assert "<h1>Authorize</h1>" in english and "Allow as Alice" in english
    chooser = client.get(authorize.replace("userinfo", "base"), headers={"Accept-Language": "zh"})
    assert "谁在使用微信？" in chooser.text
    order = client.get(
        authorize.replace(f"appid={oa}&", "") + f"&appid={oa}",
        headers={"Accept-Language": "zh"},
    )
    assert "参数顺序错误" in order.text and "must come in the order" not in order.text
    assert "<h1>微信模拟器</h1>" in client.get("/", headers={"Accept-Language": "zh"}).text
    assert "<h1>WeChat simulator</h1>" in client.get("/?lang=en").text


def test_page_lang_reads_only_the_query_inside_the_frame() -> None:
    environ = {"QUERY_STRING": "appid=x", "HTTP_ACCEPT_LANGUAGE": "en-US"}
    assert page_lang(environ) == "en"
    assert page_lang(environ, embedded=True) == "zh"
    assert page_lang({"QUERY_STRING": "lang=en"}, embedded=True) == "en"


# --- control characters in the test identities show as what they are ---------------------


@pytest.mark.parametrize(
    ("nickname", "shown"),
    [
        ("张三\x14🚀", "张三\\x14🚀"),
        ('Bob "\\o/"\r\nX-WeChat-OpenID: forged', 'Bob "\\o/"\\r\\nX-WeChat-OpenID: forged'),
        ("tab\there\x7f\x85", "tab\\there\\x7f\\x85"),
        ("left\u202eright\u2028", "left\\u202eright\\u2028"),
        # What only looks odd stays as it is: a family emoji joined with ZWJ, CJK, accents.
        ("👨\u200d👩\u200d👧 Zoë 李", "👨\u200d👩\u200d👧 Zoë 李"),
        # Half an emoji (a lone surrogate) has no UTF-8 form at all.
        ("x\ud83dy", "x\ufffdy"),
    ],
)
def test_visible_writes_what_would_act_as_escapes(nickname: str, shown: str) -> None:
    assert visible(nickname) == shown


def test_every_page_that_names_the_test_users_shows_their_control_characters(
    client: Client,
) -> None:
    qr = qrconnect(client, "&lang=en").text
    found = re.search(r'href="http://localhost(/connect/confirm/[^"]+)"', qr)
    assert found is not None
    pages = {
        "qr": qr,
        "frame": qrconnect(client, "&login_type=jssdk&lang=en").text,
        "phone": client.get(found.group(1)).text,
        "index": client.get("/").text,
    }
    for name, page in pages.items():
        assert "张三\\x14🚀" in page, name
        assert "\ufffd" not in page and "\x14" not in page, name
        assert "Bob &quot;\\o/&quot;\\r\\nX-WeChat-OpenID: forged" in page, name


# --- the demo's sample app looks like the gateway's pages ---------------------------------


def sample_page(**headers: str) -> str:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/welcome",
        "RAW_URI": "/welcome?x=<b>",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    captured: list[str] = []
    body = b"".join(sample_app(environ, lambda status, _headers: captured.append(status)))
    assert captured == ["200 OK"]
    return body.decode("utf-8")


def test_the_sample_app_wears_the_gateway_pages_stylesheet() -> None:
    page = sample_page(**{"X-WeChat-OpenID": "oAlice", "X-WeChat-Nickname": "Alice"})
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style is not None and style.group(1).startswith(stylesheet())
    assert '<header class="brand">' in page and '<main class="sample">' in page
    assert '<a class="button" id="logout" href="/_gateway/logout">Sign out</a>' in page
    # What the browser tests and the live panel read is all still there.
    for marker in (
        '<h1 id="greeting">Hello, Alice!</h1>',
        '<td data-header="X-WeChat-OpenID"><code>oAlice</code></td>',
        '<td data-header="X-WeChat-UnionID"><em>absent</em></td>',
        '<code id="path">/welcome?x=&lt;b&gt;</code>',
        'id="assertion" data-verified="no"',
        'id="ws-status"',
        'id="ws-clock"',
        'id="ws-input"',
        '<ul id="ws-log">',
        '<form id="ws-form" data-path="/ws">',
        "new WebSocket(",
    ):
        assert marker in page, marker


def test_the_sample_app_shows_a_control_character_it_receives() -> None:
    """The gateway removes them from the header; an app that gets one anyway shows it."""
    page = sample_page(**{"X-WeChat-Nickname": "%E5%BC%A0%E4%B8%89%14"})
    assert '<h1 id="greeting">Hello, 张三\\x14!</h1>' in page


# --- the command: nothing to do, no config file -------------------------------------------


def test_no_command_prints_the_whole_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main([], capsys)
    assert code == 2 and out == ""
    assert err.startswith("usage: wechat-gateway")
    for word in ("serve", "check-config", "sessions", "gen-secret", "demo", "examples:"):
        assert word in err


def test_sessions_without_an_action_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = main(["sessions"], capsys)
    assert code == 2
    assert err.startswith("usage: wechat-gateway sessions")
    assert "list" in err and "revoke" in err


@pytest.mark.parametrize("command", [["check-config"], ["serve"], ["sessions", "list"]])
def test_without_a_config_file_it_says_how_to_start_one(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    code, out, err = main(command, capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "gateway.yaml: config file not found (no -c FILE, no $WECHAT_GATEWAY_CONFIG); start "
        "from the example, at the top of the source tree: cp gateway.yaml.example gateway.yaml"
    ]
    # In the source tree, the example is right there.
    (tmp_path / cli.EXAMPLE_CONFIG).write_text("# example\n", encoding="utf-8")
    _code, _out, err = main(command, capsys)
    assert err.splitlines() == [
        "gateway.yaml: config file not found (no -c FILE, no $WECHAT_GATEWAY_CONFIG); start "
        "from the example: cp gateway.yaml.example gateway.yaml"
    ]


def test_a_missing_file_named_by_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gw.yaml"))
    code, _out, err = main(["check-config"], capsys)
    assert code == 2
    assert err == f"{tmp_path / 'gw.yaml'}: config file not found (named by ${ENV_VAR})\n"


def test_a_missing_file_named_with_c_is_just_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = main(["check-config", "-c", "gw.yaml"], capsys)
    assert code == 2
    assert err == "gw.yaml: config file not found\n"


def test_the_hint_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("WECHAT_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("GATEWAY_SESSION_SECRET", SESSION_SECRET)
    _code, out, err = main(["check-config"], capsys)
    assert APP_SECRET not in out + err and SESSION_SECRET not in out + err
