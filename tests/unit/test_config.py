"""Tests for :mod:`gateway.config`: YAML + ``${ENV}`` -> validated, frozen settings.

A config is written here the way an operator writes one (YAML text, or a dict dumped to
YAML), and parsed with the public entry points ``parse_settings`` and ``load_settings``.
Broken configs must report every problem at once, each under its key path, and never echo a
secret back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import (
    ConfigError,
    OfficialAccountSettings,
    Settings,
    default_config_path,
    load_settings,
    parse_duration,
    parse_settings,
)

# Distinctive values, so a leak into any message is unmistakable.
SESSION_SECRET = "SessSecret-9f3KqZ-leakcheck-0123456789abcdef"
PREVIOUS_SECRET = "PrevSecret-7hWpX2-leakcheck-0123456789abcdef"
APP_SECRET = "AppSecret-Qm4vT8-leakcheck-0123456789"
OA_SECRET = "OaSecret-Lr6yB1-leakcheck-0123456789"
SHORT_SECRET = "ShortSecret-Zx81"  # 16 characters: too short for session.secret
ALL_SECRETS = (SESSION_SECRET, PREVIOUS_SECRET, APP_SECRET, OA_SECRET, SHORT_SECRET)


def minimal(**overrides: Any) -> dict[str, Any]:
    """The smallest valid config; ``overrides`` replace (or, as None, remove) top-level keys."""
    config: dict[str, Any] = {
        "public_url": "https://intranet.example.com",
        "wechat": {"app_id": "wx0123456789abcdef", "app_secret": APP_SECRET},
        "session": {"secret": SESSION_SECRET},
        "upstreams": [{"prefix": "/", "url": "http://127.0.0.1:8080"}],
    }
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def with_section(section: str, **values: Any) -> dict[str, Any]:
    """``minimal()`` with keys merged into one of its mapping sections."""
    config = minimal()
    config[section] = {**config.get(section, {}), **values}
    return config


def parse(config: dict[str, Any] | str, environ: dict[str, str] | None = None) -> Settings:
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    return parse_settings(text, environ=environ or {})


def problems(config: dict[str, Any] | str, environ: dict[str, str] | None = None) -> list[str]:
    """The problems a broken config reports; fails the test if the config is accepted."""
    with pytest.raises(ConfigError) as info:
        parse(config, environ)
    error = info.value
    assert error.problems, "a ConfigError must list at least one problem"
    assert str(error) == "\n".join(error.problems)
    return error.problems


def problems_for(found: list[str], path: str) -> list[str]:
    """Every problem reported under ``path``; at least one."""
    matching = [problem for problem in found if problem.startswith(f"{path}: ")]
    assert matching, f"expected a problem for {path!r}, got {found!r}"
    return matching


def mentions(found: list[str], path: str, word: str) -> bool:
    return any(word in problem for problem in problems_for(found, path))


def problem_for(found: list[str], path: str) -> str:
    """The one problem reported under ``path`` (``path: ...``)."""
    matching = [problem for problem in found if problem.startswith(f"{path}: ")]
    assert len(matching) == 1, f"expected one problem for {path!r}, got {found!r}"
    return matching[0]


# --- a valid config -----------------------------------------------------------------------


def test_minimal_config_parses() -> None:
    settings = parse(minimal())

    assert settings.public_url == "https://intranet.example.com"
    assert settings.wechat.app_id == "wx0123456789abcdef"
    assert settings.wechat.app_secret == APP_SECRET
    assert settings.session.secret == SESSION_SECRET
    assert len(settings.upstreams) == 1
    assert settings.upstreams[0].prefix == "/"
    assert settings.upstreams[0].url == "http://127.0.0.1:8080"


def test_the_contract_example_parses() -> None:
    text = """
public_url: https://intranet.example.com
server:
  bind: 0.0.0.0:8000
  workers: 2
wechat:
  app_id: wx0123456789abcdef
  app_secret: ${WECHAT_APP_SECRET}
  open_base: https://open.weixin.qq.com
  api_base: https://api.weixin.qq.com
  lang: cn
  timeout: 5
  official_account:
    app_id: wx00000000000000aa
    app_secret: ${WECHAT_OA_SECRET}
    scope: snsapi_userinfo
session:
  secret: ${GATEWAY_SESSION_SECRET}
  cookie_name: wechat_gateway
  max_age: 7d
  secure: true
upstreams:
  - prefix: /
    url: http://127.0.0.1:8080
    timeout: 30
access:
  allow: []
  public: []
"""
    environ = {
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_OA_SECRET": OA_SECRET,
        "GATEWAY_SESSION_SECRET": SESSION_SECRET,
    }
    settings = parse(text, environ)

    assert settings.wechat.app_secret == APP_SECRET
    assert settings.wechat.official_account == OfficialAccountSettings(
        app_id="wx00000000000000aa", app_secret=OA_SECRET, scope="snsapi_userinfo"
    )
    assert settings.session.secret == SESSION_SECRET
    assert settings.session.max_age == 604800
    assert settings.access.allow == ()
    assert settings.access.public == ()


def test_defaults() -> None:
    settings = parse(minimal())

    assert settings.server.bind == "0.0.0.0:8000"
    assert settings.server.workers == 2
    assert settings.session.cookie_name == "wechat_gateway"
    assert settings.session.max_age == 604800
    assert settings.session.secure is True
    assert settings.session.previous_secrets == ()
    assert settings.wechat.open_base == "https://open.weixin.qq.com"
    assert settings.wechat.api_base == "https://api.weixin.qq.com"
    assert settings.wechat.lang == "cn"
    assert settings.wechat.timeout == 5
    assert settings.wechat.official_account is None
    assert settings.upstreams[0].timeout == 30
    assert settings.access.allow == ()
    assert settings.access.public == ()


def test_secure_defaults_to_false_for_an_http_public_url() -> None:
    settings = parse(minimal(public_url="http://127.0.0.1:8000"))
    assert settings.session.secure is False


@pytest.mark.parametrize(
    ("public_url", "secure", "expected"),
    [
        ("https://intranet.example.com", False, False),
        ("http://127.0.0.1:8000", True, True),
    ],
)
def test_secure_can_be_set_explicitly(public_url: str, secure: bool, expected: bool) -> None:
    config = with_section("session", secure=secure)
    config["public_url"] = public_url
    assert parse(config).session.secure is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://intranet.example.com/", "https://intranet.example.com"),
        ("https://intranet.example.com:8443", "https://intranet.example.com:8443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_public_url_is_kept_as_an_origin(given: str, expected: str) -> None:
    assert parse(minimal(public_url=given)).public_url == expected


def test_every_section_can_be_given() -> None:
    config = minimal(
        server={"bind": "127.0.0.1:9000", "workers": 4},
        wechat={
            "app_id": "wx0123456789abcdef",
            "app_secret": APP_SECRET,
            "open_base": "https://open.example.test",
            "api_base": "https://api.wechat.com",
            "lang": "en",
            "timeout": "2500ms",
            "official_account": {"app_id": "wxoa", "app_secret": OA_SECRET, "scope": "snsapi_base"},
        },
        session={
            "secret": SESSION_SECRET,
            "previous_secrets": [PREVIOUS_SECRET],
            "cookie_name": "gw",
            "max_age": "12h",
            "secure": False,
        },
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": "/api/", "url": "https://api.internal:8443/base/", "timeout": "90s"},
        ],
        access={"allow": ["oOpenID1", "uUnionID1"], "public": ["/static/", "/favicon.ico"]},
    )
    settings = parse(config)

    assert settings.server.bind == "127.0.0.1:9000"
    assert settings.server.workers == 4
    assert settings.wechat.open_base == "https://open.example.test"
    assert settings.wechat.api_base == "https://api.wechat.com"
    assert settings.wechat.lang == "en"
    assert settings.wechat.timeout == 2.5
    assert settings.wechat.official_account is not None
    assert settings.wechat.official_account.scope == "snsapi_base"
    assert settings.session.previous_secrets == (PREVIOUS_SECRET,)
    assert settings.session.cookie_name == "gw"
    assert settings.session.max_age == 12 * 3600
    assert settings.session.secure is False
    assert [u.prefix for u in settings.upstreams] == ["/", "/api/"]
    assert settings.upstreams[1].timeout == 90
    assert settings.access.allow == ("oOpenID1", "uUnionID1")
    assert settings.access.public == ("/static/", "/favicon.ico")


def test_official_account_scope_defaults_to_userinfo() -> None:
    config = with_section("wechat", official_account={"app_id": "wxoa", "app_secret": OA_SECRET})
    official_account = parse(config).wechat.official_account
    assert official_account is not None
    assert official_account.scope == "snsapi_userinfo"


def test_session_secret_of_exactly_32_characters_is_enough() -> None:
    assert parse(with_section("session", secret="s" * 32)).session.secret == "s" * 32
    found = problems(with_section("session", secret="s" * 31))
    assert "32" in problem_for(found, "session.secret")


# --- cookie name prefixes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("__Host-wg", None),
        ("__host-wg", None),
        ("__Secure-wg", None),
        ("__Secure-wg", ".example.com"),
    ],
)
def test_a_prefixed_cookie_name_that_can_hold_is_accepted(name: str, domain: str | None) -> None:
    config = with_section("session", cookie_name=name)
    if domain is not None:
        config["session"]["cookie_domain"] = domain

    session = parse(config).session

    assert (session.cookie_name, session.secure, session.cookie_domain) == (name, True, domain)


@pytest.mark.parametrize(
    ("public_url", "session", "word"),
    [
        ("http://127.0.0.1:8000", {"cookie_name": "__Host-wg"}, "https public_url"),
        ("http://127.0.0.1:8000", {"cookie_name": "__Secure-wg"}, "https public_url"),
        ("http://127.0.0.1:8000", {"cookie_name": "__host-wg", "secure": True}, "https"),
        ("https://a.example.com", {"cookie_name": "__Host-wg", "secure": False}, "secure"),
        ("https://a.example.com", {"cookie_name": "__SECURE-wg", "secure": False}, "secure"),
        (
            "https://a.example.com",
            {"cookie_name": "__Host-wg", "cookie_domain": ".example.com"},
            "cookie_domain",
        ),
        (
            "https://a.example.com",
            {"cookie_name": "__hOsT-wg", "cookie_domain": "example.com"},
            "cookie_domain",
        ),
    ],
)
def test_a_cookie_prefix_that_cannot_hold_is_refused(
    public_url: str, session: dict[str, Any], word: str
) -> None:
    config = with_section("session", **session)
    config["public_url"] = public_url

    problem = problem_for(problems(config), "session.cookie_name")

    assert word in problem
    assert ("__Host-" if "host" in session["cookie_name"].lower() else "__Secure-") in problem


def test_every_broken_rule_of_a_host_prefix_is_reported() -> None:
    config = with_section("session", cookie_name="__Host-wg", cookie_domain=".example.com")
    config["public_url"] = "http://a.example.com"

    found = problems_for(problems(config), "session.cookie_name")

    assert len(found) == 2, found
    assert any("https public_url" in problem for problem in found)
    assert any("cookie_domain" in problem for problem in found)


# --- immutability -------------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    settings = parse(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.public_url = "https://evil.example"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.session.secret = "x" * 40  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.wechat.app_id = "wxother"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.workers = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.upstreams[0].url = "http://elsewhere"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.access.allow = ("anyone",)  # type: ignore[misc]


def test_collections_in_settings_are_immutable() -> None:
    config = minimal(access={"allow": ["o1"], "public": ["/static/"]})
    config["session"]["previous_secrets"] = [PREVIOUS_SECRET]
    settings = parse(config)
    assert isinstance(settings.upstreams, tuple)
    assert isinstance(settings.access.allow, tuple)
    assert isinstance(settings.access.public, tuple)
    assert isinstance(settings.session.previous_secrets, tuple)


def test_repr_of_settings_shows_no_secret() -> None:
    config = with_section("session", previous_secrets=[PREVIOUS_SECRET])
    config["wechat"]["official_account"] = {"app_id": "wxoa", "app_secret": OA_SECRET}
    text = repr(parse(config))
    for secret in (APP_SECRET, OA_SECRET, SESSION_SECRET, PREVIOUS_SECRET):
        assert secret not in text


# --- environment substitution -------------------------------------------------------------


def test_variables_are_substituted() -> None:
    config = with_section("wechat", app_secret="${APP_SECRET}")
    settings = parse(config, {"APP_SECRET": APP_SECRET})
    assert settings.wechat.app_secret == APP_SECRET


def test_a_variable_can_be_part_of_a_string() -> None:
    config = minimal(upstreams=[{"prefix": "/", "url": "http://${HOST}:${PORT}/app"}])
    settings = parse(config, {"HOST": "10.0.0.7", "PORT": "9000"})
    assert settings.upstreams[0].url == "http://10.0.0.7:9000/app"


def test_default_is_used_when_the_variable_is_unset() -> None:
    config = minimal(upstreams=[{"prefix": "/", "url": "http://${HOST:-127.0.0.1}:${PORT:-8080}"}])
    assert parse(config).upstreams[0].url == "http://127.0.0.1:8080"


def test_a_set_variable_wins_over_its_default() -> None:
    config = minimal(upstreams=[{"prefix": "/", "url": "http://${HOST:-127.0.0.1}:8080"}])
    assert parse(config, {"HOST": "app.internal"}).upstreams[0].url == "http://app.internal:8080"


def test_an_empty_default_is_allowed() -> None:
    config = minimal(access={"allow": ["a${SUFFIX:-}b"]})
    assert parse(config).access.allow == ("ab",)


def test_default_is_used_when_the_variable_is_empty() -> None:
    config = minimal(upstreams=[{"prefix": "/", "url": "http://${HOST:-127.0.0.1}:8080"}])
    assert parse(config, {"HOST": ""}).upstreams[0].url == "http://127.0.0.1:8080"


def test_dollar_dollar_is_a_literal_dollar() -> None:
    config = minimal(access={"allow": ["price$$5"]})
    assert parse(config).access.allow == ("price$5",)


_ESCAPED = "lit$${HOME}"
_ESCAPE_CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "wechat.app_secret": (
        with_section("wechat", app_secret=_ESCAPED),
        lambda s: s.wechat.app_secret,
    ),
    "session.secret": (
        with_section("session", secret="s" * 32 + _ESCAPED),
        lambda s: s.session.secret[32:],
    ),
    "access.allow[0]": (minimal(access={"allow": [_ESCAPED]}), lambda s: s.access.allow[0]),
    "upstreams[0].url": (
        minimal(upstreams=[{"prefix": "/", "url": f"http://127.0.0.1:8080/{_ESCAPED}"}]),
        lambda s: s.upstreams[0].url.rsplit("/", 1)[1],
    ),
}


@pytest.mark.parametrize("path", list(_ESCAPE_CASES))
def test_dollar_dollar_escapes_a_reference_in_any_section(path: str) -> None:
    config, read = _ESCAPE_CASES[path]
    assert read(parse(config, {"HOME": "/root"})) == "lit${HOME}"


def test_values_from_the_environment_are_used_verbatim() -> None:
    secret = "x" * 32 + "$$y${Z}"
    config = with_section("session", secret="${SECRET}")
    settings = parse(config, {"SECRET": secret, "Z": "injected"})
    assert settings.session.secret == secret


def test_unset_variable_is_an_error_naming_variable_and_key() -> None:
    config = with_section("wechat", app_secret="${WECHAT_APP_SECRET}")
    assert mentions(problems(config), "wechat.app_secret", "WECHAT_APP_SECRET")


def test_an_unset_variable_is_reported_once() -> None:
    config = with_section("wechat", app_secret="${WECHAT_APP_SECRET}")
    assert problem_for(problems(config), "wechat.app_secret") == (
        "wechat.app_secret: environment variable WECHAT_APP_SECRET is not set"
    )


def test_every_unset_variable_is_reported() -> None:
    config = minimal(
        public_url="${PUBLIC_URL}",
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": "/api/", "url": "${API_URL}"},
        ],
        access={"allow": ["o1", "${ALLOWED_USER}"]},
    )
    config["wechat"]["app_secret"] = "${WECHAT_APP_SECRET}"
    config["session"]["secret"] = "${GATEWAY_SESSION_SECRET}"
    found = problems(config)
    assert mentions(found, "public_url", "PUBLIC_URL")
    assert mentions(found, "wechat.app_secret", "WECHAT_APP_SECRET")
    assert mentions(found, "session.secret", "GATEWAY_SESSION_SECRET")
    assert mentions(found, "upstreams[1].url", "API_URL")
    assert mentions(found, "access.allow[1]", "ALLOWED_USER")


def test_substitution_inside_lists_and_nested_mappings() -> None:
    config = minimal(
        upstreams=[
            {"prefix": "${ROOT:-/}", "url": "http://127.0.0.1:8080"},
            {"prefix": "/api/", "url": "http://${API_HOST}:9000", "timeout": "${API_TIMEOUT}"},
        ],
        access={"allow": ["${USER_A}", "${USER_B:-oDefault}"], "public": ["/${STATIC}/"]},
    )
    config["wechat"]["official_account"] = {"app_id": "${OA_ID}", "app_secret": "${OA_SECRET}"}
    environ = {
        "API_HOST": "api.internal",
        "API_TIMEOUT": "45s",
        "USER_A": "oUserA",
        "STATIC": "assets",
        "OA_ID": "wxoa",
        "OA_SECRET": OA_SECRET,
    }
    settings = parse(config, environ)

    assert settings.upstreams[0].prefix == "/"
    assert settings.upstreams[1].url == "http://api.internal:9000"
    assert settings.upstreams[1].timeout == 45
    assert settings.access.allow == ("oUserA", "oDefault")
    assert settings.access.public == ("/assets/",)
    assert settings.wechat.official_account is not None
    assert settings.wechat.official_account.app_id == "wxoa"
    assert settings.wechat.official_account.app_secret == OA_SECRET


def test_unset_variable_deep_in_a_list_names_its_path() -> None:
    config = with_section("wechat", official_account={"app_id": "wxoa", "app_secret": "${OA_X}"})
    assert mentions(problems(config), "wechat.official_account.app_secret", "OA_X")


def test_typed_values_can_come_from_the_environment() -> None:
    config = minimal(
        server={"bind": "${BIND}", "workers": "${WORKERS}"},
        session={"secret": SESSION_SECRET, "secure": "${SECURE}", "max_age": "${MAX_AGE:-1d}"},
    )
    environ = {"BIND": "127.0.0.1:7000", "WORKERS": "4", "SECURE": "false"}
    settings = parse(config, environ)
    assert settings.server.bind == "127.0.0.1:7000"
    assert settings.server.workers == 4
    assert settings.session.secure is False
    assert settings.session.max_age == 86400


@pytest.mark.parametrize("value", ["${", "${UNCLOSED", "${1BAD}", "${BAD NAME}", "${}"])
def test_malformed_reference_is_an_error(value: str) -> None:
    config = minimal(access={"allow": [f"o{value}"]})
    problem_for(problems(config), "access.allow[0]")


def test_a_lone_dollar_is_kept() -> None:
    config = minimal(access={"allow": ["a$b", "$"]})
    assert parse(config).access.allow == ("a$b", "$")


def test_parse_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_APP_SECRET", APP_SECRET)
    config = with_section("wechat", app_secret="${GW_TEST_APP_SECRET}")
    settings = parse_settings(yaml.safe_dump(config))
    assert settings.wechat.app_secret == APP_SECRET


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (30, 30),
        (1.5, 1.5),
        ("30", 30),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("250ms", 0.25),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "7 days", "5w", "-5", -5, "-5s", "1.5.2s", "s", "10 s s", True, None, [5], {}],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="must"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800)],
)
def test_durations_in_the_config(value: object, seconds: int) -> None:
    config = with_section("session", max_age=value)
    config["wechat"]["timeout"] = value
    config["upstreams"][0]["timeout"] = value
    settings = parse(config)
    assert settings.session.max_age == seconds
    assert settings.wechat.timeout == seconds
    assert settings.upstreams[0].timeout == seconds


@pytest.mark.parametrize("value", ["soon", "7 days", "5w", -1, "-1s", True, [1], {"s": 1}])
def test_invalid_durations_are_reported_per_key(value: object) -> None:
    config = with_section("session", max_age=value)
    config["wechat"]["timeout"] = value
    config["upstreams"][0]["timeout"] = value
    found = problems(config)
    for path in ("session.max_age", "wechat.timeout", "upstreams[0].timeout"):
        assert "duration" in problem_for(found, path) or "negative" in problem_for(found, path)


@pytest.mark.parametrize("path", ["session.max_age", "wechat.timeout", "upstreams[0].timeout"])
def test_zero_is_not_a_usable_timeout_or_lifetime(path: str) -> None:
    config = minimal()
    if path == "session.max_age":
        config["session"]["max_age"] = 0
    elif path == "wechat.timeout":
        config["wechat"]["timeout"] = "0s"
    else:
        config["upstreams"][0]["timeout"] = 0
    problem_for(problems(config), path)


def test_session_max_age_below_one_second_is_rejected() -> None:
    problem_for(problems(with_section("session", max_age="500ms")), "session.max_age")


# --- every problem at once ----------------------------------------------------------------


def test_every_required_key_missing_is_reported_together() -> None:
    found = problems("{}")
    for path in ("public_url", "wechat.app_id", "wechat.app_secret", "session.secret"):
        assert problem_for(found, path).endswith("required")
    assert problem_for(found, "upstreams").startswith("upstreams: required")
    # Neither provider: WeChat's keys are named, and so is the choice of WeCom instead.
    assert "wechat or wecom: configure at least one sign-in provider" in found
    assert len(found) == 6


def test_required_keys_in_present_but_empty_sections() -> None:
    found = problems(minimal(wechat={}, session={}))
    assert "wechat.app_id: required" in found
    assert "wechat.app_secret: required" in found
    assert "session.secret: required" in found


def test_contract_messages_are_exact() -> None:
    config = minimal(upstreams=[{"prefix": "/", "url": "ftp://files.example.com"}])
    del config["wechat"]["app_id"]
    found = problems(config)
    assert "wechat.app_id: required" in found
    assert "upstreams[0].url: must be an http or https URL" in found


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_required_string_is_reported(value: str) -> None:
    problem_for(problems(with_section("wechat", app_id=value)), "wechat.app_id")


def test_problems_from_every_section_are_collected() -> None:
    config = minimal(
        public_url="ftp://intranet.example.com",
        server={"workers": "two", "bind": "nonsense"},
        upstream=[],
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": "/files/", "url": "ftp://files.example.com"},
        ],
        access={"allow": "everyone"},
    )
    config["wechat"] = {"appid": "wx1", "app_secret": APP_SECRET, "lang": "fr"}
    config["session"] = {"secret": SHORT_SECRET, "secure": "maybe", "max_age": "forever"}
    found = problems(config)
    for path in (
        "public_url",
        "server.workers",
        "server.bind",
        "upstream",
        "upstreams[1].url",
        "access.allow",
        "wechat.appid",
        "wechat.app_id",
        "wechat.lang",
        "session.secret",
        "session.secure",
        "session.max_age",
    ):
        problem_for(found, path)
    assert len(found) == 12


def test_upstream_entries_are_validated_one_by_one() -> None:
    config = minimal(upstreams=[{}, {"prefix": "/x/", "url": "http://a"}, {"prefix": "/y/"}])
    found = problems(config)
    assert "upstreams[0].url: required" in found
    assert "upstreams[2].url: required" in found
    assert not any(problem.startswith("upstreams[1]") for problem in found)


# --- unknown keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path", "suggestion"),
    [
        (minimal(upstream=[]), "upstream", "upstreams"),
        (minimal(public_uri="https://x.example"), "public_uri", "public_url"),
        (with_section("wechat", appid="wx1"), "wechat.appid", "app_id"),
        (with_section("wechat", app_secrets="x"), "wechat.app_secrets", "app_secret"),
        (with_section("session", cookiename="c"), "session.cookiename", "cookie_name"),
        (with_section("session", max_ages="1d"), "session.max_ages", "max_age"),
        (minimal(server={"worker": 3}), "server.worker", "workers"),
        (minimal(access={"alow": []}), "access.alow", "allow"),
        (
            minimal(upstreams=[{"prefx": "/", "url": "http://127.0.0.1:8080"}]),
            "upstreams[0].prefx",
            "prefix",
        ),
        (
            with_section(
                "wechat", official_account={"app_id": "wxoa", "app_secret": "x", "scop": "x"}
            ),
            "wechat.official_account.scop",
            "scope",
        ),
    ],
)
def test_unknown_key_suggests_the_closest_known_key(
    config: dict[str, Any], path: str, suggestion: str
) -> None:
    problem = problem_for(problems(config), path)
    assert "unknown key" in problem
    assert f"did you mean '{suggestion}'" in problem


def test_unknown_key_with_nothing_close_has_no_suggestion() -> None:
    problem = problem_for(problems(minimal(zzzzzz=1)), "zzzzzz")
    assert "unknown key" in problem
    assert "did you mean" not in problem


def test_non_string_key_is_an_unknown_key() -> None:
    text = yaml.safe_dump(minimal()) + "42: x\n"
    assert "unknown key" in problem_for(problems(text), "42")


def test_unknown_keys_are_reported_alongside_other_problems() -> None:
    config = minimal(upstream=[], public_url=None)
    config["wechat"]["appid"] = config["wechat"].pop("app_id")
    found = problems(config)
    problem_for(found, "upstream")
    problem_for(found, "wechat.appid")
    assert "wechat.app_id: required" in found
    assert "public_url: required" in found


# --- types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (minimal(server={"workers": "two"}), "server.workers"),
        (minimal(server={"workers": 0}), "server.workers"),
        (minimal(server={"workers": 1.5}), "server.workers"),
        (minimal(server={"workers": True}), "server.workers"),
        (minimal(server={"bind": "localhost"}), "server.bind"),
        (minimal(server={"bind": ["0.0.0.0:8000"]}), "server.bind"),
        (with_section("session", secure="maybe"), "session.secure"),
        (with_section("session", secure=2), "session.secure"),
        (with_section("session", cookie_name="bad name;"), "session.cookie_name"),
        (with_section("wechat", lang="fr"), "wechat.lang"),
        (with_section("wechat", app_id=["wx1"]), "wechat.app_id"),
        (with_section("wechat", api_base="api.weixin.qq.com"), "wechat.api_base"),
        (with_section("wechat", open_base="ftp://open.weixin.qq.com"), "wechat.open_base"),
        (
            with_section(
                "wechat", official_account={"app_id": "a", "app_secret": "b", "scope": "x"}
            ),
            "wechat.official_account.scope",
        ),
        (with_section("wechat", official_account="yes"), "wechat.official_account"),
        (minimal(wechat="wx0123456789abcdef"), "wechat"),
        (minimal(session=[SESSION_SECRET]), "session"),
        (minimal(server="0.0.0.0:8000"), "server"),
        (minimal(access={"allow": "oOpenID"}), "access.allow"),
        (minimal(access={"public": [["/static/"]]}), "access.public[0]"),
        (minimal(upstreams="http://127.0.0.1:8080"), "upstreams"),
        (minimal(upstreams={"prefix": "/", "url": "http://127.0.0.1:8080"}), "upstreams"),
        (minimal(upstreams=[]), "upstreams"),
        (minimal(upstreams=["http://127.0.0.1:8080"]), "upstreams[0]"),
        (minimal(upstreams=[{"prefix": "/", "url": 8080}]), "upstreams[0].url"),
    ],
)
def test_type_errors_name_their_key(config: dict[str, Any], path: str) -> None:
    problem_for(problems(config), path)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com",
        "127.0.0.1:8080",
        "file:///etc/passwd",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:8080/?q=1",
        "http://user:pw@127.0.0.1:8080",
    ],
)
def test_upstream_url_must_be_http(url: str) -> None:
    config = minimal(
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": "/files/", "url": url},
        ]
    )
    assert problem_for(problems(config), "upstreams[1].url") == (
        "upstreams[1].url: must be an http or https URL"
    )


@pytest.mark.parametrize(
    "public_url",
    [
        "https://intranet.example.com/app",
        "https://intranet.example.com/app/",
        "ftp://intranet.example.com",
        "intranet.example.com",
        "https://intranet.example.com?x=1",
        "https://intranet.example.com#top",
        "https://user@intranet.example.com",
        "https://intranet.example.com:99999",
        "https://",
    ],
)
def test_public_url_must_be_an_http_origin(public_url: str) -> None:
    problem_for(problems(minimal(public_url=public_url)), "public_url")


@pytest.mark.parametrize(
    "public_url",
    ["https://intra net.example.com", "https://<b>.example.com", "https://${X}.example.com"],
)
def test_public_url_host_must_be_a_host_name(public_url: str) -> None:
    problem_for(problems(minimal(public_url=public_url.replace("$", "$$"))), "public_url")


@pytest.mark.parametrize("prefix", ["/_gateway", "/_gateway/", "/_gateway/login"])
def test_reserved_prefix_is_rejected(prefix: str) -> None:
    config = minimal(
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": prefix, "url": "http://127.0.0.1:8081"},
        ]
    )
    assert "/_gateway" in problem_for(problems(config), "upstreams[1].prefix")


def test_prefix_must_start_with_a_slash() -> None:
    config = minimal(upstreams=[{"prefix": "api/", "url": "http://127.0.0.1:8080"}])
    problem_for(problems(config), "upstreams[0].prefix")


def test_duplicate_upstream_prefixes_are_rejected() -> None:
    config = minimal(
        upstreams=[
            {"prefix": "/", "url": "http://127.0.0.1:8080"},
            {"prefix": "/api/", "url": "http://127.0.0.1:8081"},
            {"prefix": "/", "url": "http://127.0.0.1:8082"},
        ]
    )
    found = problems(config)
    problem_for(found, "upstreams[2].prefix")
    assert not any(problem.startswith(("upstreams[0]", "upstreams[1]")) for problem in found)


# --- secrets never echoed -----------------------------------------------------------------


def _secret_case(**sections: Any) -> dict[str, Any]:
    """A config carrying every distinctive secret, with ``sections`` merged in."""
    config = minimal()
    config["wechat"]["official_account"] = {"app_id": "wxoa", "app_secret": OA_SECRET}
    config["session"]["previous_secrets"] = [PREVIOUS_SECRET]
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


_LEAK_CASES: dict[str, dict[str, Any] | str] = {
    "session secret too short": _secret_case(session={"secret": SHORT_SECRET}),
    "session secret as a list": _secret_case(session={"secret": [SESSION_SECRET]}),
    "session secret as a mapping": _secret_case(session={"secret": {"value": SESSION_SECRET}}),
    "app secret as a list": _secret_case(wechat={"app_secret": [APP_SECRET]}),
    "app secret as a mapping": _secret_case(wechat={"app_secret": {"v": APP_SECRET}}),
    "oa secret as a list": _secret_case(
        wechat={"official_account": {"app_id": "wxoa", "app_secret": [OA_SECRET]}}
    ),
    "previous secret too short": _secret_case(
        session={"secret": SESSION_SECRET, "previous_secrets": [SHORT_SECRET]}
    ),
    "previous secrets not a list": _secret_case(session={"previous_secrets": PREVIOUS_SECRET}),
    "previous secret as a list": _secret_case(session={"previous_secrets": [[PREVIOUS_SECRET]]}),
    "malformed reference in a secret": _secret_case(session={"secret": SESSION_SECRET + "${oops"}),
    "unset variable in a secret": _secret_case(wechat={"app_secret": APP_SECRET + "${NOPE}"}),
    "secret under a misspelt key": _secret_case(session={"secrets": SESSION_SECRET}),
    "app secret under a misspelt key": _secret_case(wechat={"appsecret": APP_SECRET}),
    "secret in an unknown section": _secret_case(sesion={"secret": SESSION_SECRET}),
    "everything else broken": _secret_case(
        public_url="nope", upstreams=[{"url": "ftp://x"}], server={"workers": "x"}
    ),
    "invalid YAML after a secret": (
        f"session:\n  secret: {SESSION_SECRET}\n  cookie_name: [unclosed\n"
    ),
    "invalid YAML in a secret": f"session:\n  secret: {SESSION_SECRET}: {APP_SECRET}\n",
    "unterminated quoted secret": f'session:\n  secret: "{SESSION_SECRET}\n',
    "duplicate secret key": (
        f"session:\n  secret: {SESSION_SECRET}\n  secret: {PREVIOUS_SECRET}\n"
    ),
}


@pytest.mark.parametrize("config", list(_LEAK_CASES.values()), ids=list(_LEAK_CASES))
def test_secret_values_are_never_echoed(config: dict[str, Any] | str) -> None:
    found = problems(config)
    message = "\n".join(found)
    for secret in ALL_SECRETS:
        assert secret not in message


def test_secret_from_the_environment_is_never_echoed() -> None:
    config = with_section("session", secret="${SESSION_SECRET}")
    found = problems(config, {"SESSION_SECRET": SHORT_SECRET})
    problem_for(found, "session.secret")
    assert SHORT_SECRET not in "\n".join(found)


@pytest.mark.parametrize("tag", ["!!int", "!!float", "!!bool", "!!timestamp"])
def test_explicitly_tagged_bad_scalar_is_a_config_error(tag: str) -> None:
    text = yaml.safe_dump(minimal()).replace(
        f"app_secret: {APP_SECRET}", f"app_secret: {tag} {APP_SECRET}"
    )
    assert tag in text
    found = problems(text)
    assert APP_SECRET not in "\n".join(found)
    assert APP_SECRET.lower() not in "\n".join(found)


# --- the YAML itself ----------------------------------------------------------------------


def test_duplicate_top_level_key_is_rejected() -> None:
    text = yaml.safe_dump(minimal()) + "public_url: https://other.example.com\n"
    (problem,) = problems(text)
    assert "duplicate key 'public_url'" in problem
    assert "line" in problem


def test_duplicate_nested_key_is_rejected() -> None:
    text = (
        "public_url: https://intranet.example.com\n"
        "wechat:\n"
        "  app_id: wx1\n"
        f"  app_secret: {APP_SECRET}\n"
        "  app_id: wx2\n"
        f"session: {{secret: {SESSION_SECRET}}}\n"
        "upstreams: [{prefix: /, url: 'http://127.0.0.1:8080'}]\n"
    )
    (problem,) = problems(text)
    assert "duplicate key 'app_id'" in problem
    assert "line 5" in problem


def test_unhashable_key_is_a_config_error() -> None:
    problems(yaml.safe_dump(minimal()) + "? [a, b]\n: 1\n")


def test_recursive_alias_is_a_config_error() -> None:
    problems(yaml.safe_dump(minimal()) + "access: {allow: &x [*x]}\n")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("public_url: https://x.example\nwechat: {app_id: [unclosed\n", None, None),
        ("public_url: a\n  bad: indentation\n", 2, None),
        ("public_url: https://x.example\nwechat:\n\tapp_id: wx1\n", 3, 1),
    ],
)
def test_invalid_yaml_names_line_and_column(
    text: str, line: int | None, column: int | None
) -> None:
    (problem,) = problems(text)
    assert "invalid YAML" in problem
    assert "line" in problem
    assert "column" in problem
    if line is not None:
        assert f"line {line}" in problem
    if column is not None:
        assert f"column {column}" in problem


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_document_reports_the_required_keys(text: str) -> None:
    found = problems(text)
    assert "wechat.app_id: required" in found
    assert "public_url: required" in found


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    (problem,) = problems(text)
    assert "mapping" in problem


# --- files --------------------------------------------------------------------------------


def test_load_settings_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(minimal()), encoding="utf-8")
    assert load_settings(path).public_url == "https://intranet.example.com"
    assert load_settings(str(path)).public_url == "https://intranet.example.com"


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (problem,) = info.value.problems
    assert str(path) in problem
    assert "not found" in problem


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    (problem,) = info.value.problems
    assert str(tmp_path) in problem


def test_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"public_url: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("public_url: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (problem,) = info.value.problems
    assert str(path) in problem
    assert "invalid YAML" in problem


def test_empty_file_reports_the_required_keys(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "session.secret: required" in info.value.problems


def test_default_path_is_the_environment_variable_then_gateway_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WECHAT_GATEWAY_CONFIG", raising=False)
    assert default_config_path() == Path("gateway.yaml")

    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(minimal()), encoding="utf-8")
    assert load_settings().public_url == "https://intranet.example.com"

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(minimal(public_url="https://other.example")), "utf-8")
    monkeypatch.setenv("WECHAT_GATEWAY_CONFIG", str(other))
    assert default_config_path() == other
    assert load_settings().public_url == "https://other.example"


def test_durations_too_long_to_use_are_refused() -> None:
    """A cookie's Expires or a clock must be able to add the duration to now (no 500 later)."""
    config = minimal()
    config["session"] = {**config["session"], "max_age": "10000000000000d"}
    config["login"] = {"state_ttl": "2d"}
    config["upstreams"] = [
        {"prefix": "/", "url": "http://127.0.0.1:9001", "timeout": "36501d", "read_timeout": ".nan"}
    ]
    found = problems(config)
    assert problems_for(found, "session.max_age") == ["session.max_age: must be at most 400d"]
    assert problems_for(found, "login.state_ttl") == ["login.state_ttl: must be at most 1d"]
    assert problems_for(found, "upstreams[0].timeout") == [
        "upstreams[0].timeout: must be at most 36500d"
    ]
    assert mentions(found, "upstreams[0].read_timeout", "must be a duration")


def test_the_longest_durations_are_accepted() -> None:
    config = minimal()
    config["session"] = {**config["session"], "max_age": "400d"}
    config["login"] = {"state_ttl": "1d"}
    settings = parse(config)
    assert settings.session.max_age == 400 * 86400
    assert settings.login.state_ttl == 86400


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "36501d"])
def test_parse_duration_refuses_what_no_clock_can_add(value: object) -> None:
    with pytest.raises(ValueError, match="must"):
        parse_duration(value)


def test_websocket_settings_of_an_upstream() -> None:
    defaults = parse(minimal()).upstreams[0]
    assert defaults.websocket_origins == ()
    assert defaults.websocket_idle_timeout == 3600
    upstream = {
        "prefix": "/",
        "url": "http://127.0.0.1:8080",
        "websocket_origins": ["HTTPS://Tools.Example.com:443", "http://localhost:3000"],
        "websocket_idle_timeout": "0s",
    }
    settings = parse(minimal(upstreams=[upstream])).upstreams[0]
    assert settings.websocket_origins == ("https://tools.example.com", "http://localhost:3000")
    assert settings.websocket_idle_timeout == 0


@pytest.mark.parametrize(
    "origin", ["https://tools.example.com/path", "ws://tools.example.com", "null", "*", ""]
)
def test_a_websocket_origin_must_be_an_origin(origin: str) -> None:
    upstream = {"prefix": "/", "url": "http://127.0.0.1:8080", "websocket_origins": [origin]}
    found = problems(minimal(upstreams=[upstream]))
    assert mentions(found, "upstreams[0].websocket_origins[0]", "origin"), found


def test_capacity_defaults_hold_ten_thousand_connections() -> None:
    server = parse(minimal()).server
    assert server.workers * server.worker_connections >= 10_000


def test_groups_headers_and_identity_settings(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "signing.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    groups_file = tmp_path / "groups.yaml"
    groups_file.write_text("ops: [oOps000000000000000000000001]\n")
    config = minimal(
        access={
            "groups": {"finance": ["oAbc000000000000000000000001", "wecom:ZhangSan"]},
            "groups_file": str(groups_file),
            "allow": ["group:finance", "group:ops"],
        },
        identity={"signing_keys": [str(key)], "assertion": True},
        upstreams=[
            {
                "prefix": "/",
                "url": "http://127.0.0.1:8080",
                "headers": {"X-WEBAUTH-USER": "{openid}", "X-WEBAUTH-NAME": "{nickname}"},
                "audience": "grafana",
                "allow": ["group:ops"],
            }
        ],
    )
    settings = parse(config)
    assert settings.access.groups == (
        ("finance", ("oAbc000000000000000000000001", "wecom:ZhangSan")),
    )
    assert settings.access.groups_file == str(groups_file)
    assert settings.identity.signing_keys == (str(key),)
    assert settings.upstreams[0].headers == (
        ("X-WEBAUTH-USER", "{openid}"),
        ("X-WEBAUTH-NAME", "{nickname}"),
    )
    assert settings.upstreams[0].audience == "grafana"
    assert parse(minimal()).identity.assertion is True


def test_identity_problems_are_named(tmp_path: Path) -> None:
    bad_groups = tmp_path / "groups.yaml"
    bad_groups.write_text("ops: [unclosed\n")
    config = minimal(
        access={"groups": {"finance": ["not a member"]}, "allow": ["group:nobody"]},
        identity={"signing_keys": [str(tmp_path / "missing.pem")]},
        upstreams=[
            {
                "prefix": "/",
                "url": "http://127.0.0.1:8080",
                "headers": {"X-WeChat-User": "{openid}", "X-Ok": "{secret}", "x-ok": "{openid}"},
            }
        ],
    )
    found = problems(config)
    assert mentions(found, "access.groups.finance[0]", "openid or unionid"), found
    assert mentions(found, "access.allow[0]", "no group 'nobody'"), found
    assert mentions(found, "identity.signing_keys[0]", "file not found"), found
    assert mentions(found, "upstreams[0].headers.X-WeChat-User", "gateway's own"), found
    assert mentions(found, "upstreams[0].headers.X-Ok", "unknown field"), found
    found = problems(minimal(access={"groups_file": str(bad_groups)}))
    assert mentions(found, "access.groups_file", "not valid YAML"), found
    found = problems(minimal(access={"groups_file": str(tmp_path / "nope.yaml")}))
    assert mentions(found, "access.groups_file", "file not found"), found


@pytest.mark.parametrize("rate", ["20", "x/60s", "-1/60s", "20/0s", "1.5/60s", "20/fortnight"])
def test_a_bad_rate_limit_is_named(rate: str) -> None:
    found = problems(minimal(login={"rate_limit": rate}))
    assert problems_for(found, "login.rate_limit"), found


def test_the_rate_limit_default_and_off() -> None:
    assert parse(minimal()).login.rate_limit == "600/60s"
    assert parse(minimal(login={"rate_limit": "0/1s"})).login.rate_limit == "0/1s"
