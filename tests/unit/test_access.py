"""Tests for :mod:`gateway.access`: the allow list and the paths served without login.

A public-path rule opens a hole in the login wall, so the tests are mostly about the hole
staying exactly as wide as written: methods, prefixes and regexes match what they say, and
every spelling whose meaning could differ between the gateway and the upstream is not
public at all. ``tests/e2e/test_login.py`` checks the same through the real server.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.access import AccessPolicy, parse_public_rule
from gateway.auth.session import Session
from gateway.config import AccessSettings
from gateway.errors import BadRequest
from gateway.http.paths import plain_path, policy_path

ALICE_OPENID = "oAlice000000000000000000001"
ALICE_UNIONID = "uAlice000000000000000000001"


def _policy(allow: list[str], public: list[str]) -> AccessPolicy:
    return AccessPolicy(AccessSettings(allow=tuple(allow), public=tuple(public)))


def _session(openid: str = ALICE_OPENID, unionid: str | None = ALICE_UNIONID) -> Session:
    return Session(openid, "wx5e1a2b3c4d5e6f70", unionid, "Alice", "", 0, 2**31)


# --- the allow list -----------------------------------------------------------------------


def test_empty_allow_list_lets_any_wechat_user_in() -> None:
    policy = _policy([], [])
    assert policy.allows(_session())
    assert policy.allows(_session("oSomeoneElse", None))


def test_allowed_by_openid() -> None:
    policy = _policy([ALICE_OPENID], [])
    assert policy.allows(_session())
    assert policy.allows(_session(unionid=None))


def test_allowed_by_unionid() -> None:
    policy = _policy([ALICE_UNIONID], [])
    assert policy.allows(_session())
    assert policy.allows(_session(openid="oAliceInAnotherApp"))


def test_not_on_the_list() -> None:
    policy = _policy([ALICE_OPENID, ALICE_UNIONID], [])
    assert not policy.allows(_session("oBob", "uBob"))
    assert not policy.allows(_session("oBob", None))


def test_allow_list_entries_match_whole_values() -> None:
    policy = _policy([ALICE_OPENID], [])
    assert not policy.allows(_session(ALICE_OPENID[:-1], None))
    assert not policy.allows(_session(ALICE_OPENID + "x", None))
    assert not policy.allows(_session(ALICE_OPENID.lower(), None))


def test_a_missing_unionid_never_matches() -> None:
    # An empty string in the list must not let in everyone WeChat gave no unionid.
    policy = _policy(["", "None"], [])
    assert not policy.allows(_session("oBob", None))


# --- public paths -------------------------------------------------------------------------


def test_no_public_rules_means_nothing_is_public() -> None:
    assert not _policy([], []).is_public("GET", "/static/app.js")


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/static/app.js", True),
        ("POST", "/static/app.js", True),
        ("DELETE", "/static/a/b/c.css", True),
        ("GET", "/static/", True),
        ("GET", "/static", False),
        ("GET", "/staticx/app.js", False),
        ("GET", "/STATIC/app.js", False),
        ("GET", "/app/static/app.js", False),
        ("GET", "/", False),
        ("GET", "/static/caf%C3%A9.png", True),
        ("GET", "/static/%61pp.js", True),
        ("GET", "/static/.well-known.txt", True),
        ("GET", "/static/a..b", True),
    ],
)
def test_prefix_rule(method: str, path: str, public: bool) -> None:
    assert _policy([], ["/static/"]).is_public(method, path) is public


def test_prefix_rule_matches_the_decoded_path() -> None:
    policy = _policy([], ["/static/"])
    assert policy.is_public("GET", "/%73tatic/app.js")


@pytest.mark.parametrize(
    ("method", "public"),
    [("GET", True), ("HEAD", True), ("POST", False), ("PUT", False), ("DELETE", False)],
)
def test_method_scoped_rule(method: str, public: bool) -> None:
    assert _policy([], ["GET /static/"]).is_public(method, "/static/app.js") is public


def test_head_rule_does_not_open_get() -> None:
    policy = _policy([], ["HEAD /probe"])
    assert policy.is_public("HEAD", "/probe")
    assert not policy.is_public("GET", "/probe")


def test_method_is_case_insensitive_in_the_rule() -> None:
    assert _policy([], ["get /static/"]).is_public("GET", "/static/x")


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/api/v1/public/status", True),
        ("/api/v1/public/", True),
        ("/api/v1/private/status", False),
        ("/x/api/v1/public/status", False),
        ("/api/v1/publicity", False),
    ],
)
def test_regex_rule(path: str, public: bool) -> None:
    assert _policy([], ["~^/api/v1/public/"]).is_public("GET", path) is public


def test_method_scoped_regex_rule() -> None:
    policy = _policy([], ["POST ~^/hooks/[a-z]+$"])
    assert policy.is_public("POST", "/hooks/github")
    assert not policy.is_public("GET", "/hooks/github")
    assert not policy.is_public("POST", "/hooks/github/x")


def test_regex_rule_with_a_space() -> None:
    policy = _policy([], ["~^/docs/read me$"])
    assert policy.is_public("GET", "/docs/read%20me")


def test_several_rules() -> None:
    policy = _policy([], ["/static/", "GET /health", "~^/api/v1/public/"])
    assert policy.is_public("GET", "/static/a")
    assert policy.is_public("HEAD", "/health")
    assert not policy.is_public("POST", "/health")
    assert policy.is_public("PUT", "/api/v1/public/x")
    assert not policy.is_public("GET", "/admin")


AMBIGUOUS = [
    "/static/../admin",
    "/static/%2e%2e/admin",
    "/static/%2E%2E/admin",
    "/static/%2E%2E%2Fadmin",
    "/static/..%2fadmin",
    "/static/..%2Fadmin",
    "/static/.%2e/admin",
    "//admin",
    "//static/app.js",
    "/static//../admin",
    "/static//app.js",
    "/static/;x/../admin",
    "/static/..;/admin",
    "/static/app.js;jsessionid=1",
    "/static/..%5cadmin",
    "/static/..%5Cadmin",
    "/static/..\\admin",
    "/static\\..\\admin",
    "/static/./app.js",
    "/static/.",
    "/static/..",
    "/static/%00/app.js",
    "/static/%252e%252e/admin",
    "/static/%252F..%252Fadmin",
]


@pytest.mark.parametrize("path", AMBIGUOUS)
@pytest.mark.parametrize(
    "rule", ["/static/", "/", "GET /static/", "~^/static/", "~.*", "~^/static/.*admin"]
)
def test_ambiguous_spellings_never_open_a_protected_path(rule: str, path: str) -> None:
    """Each spelling resolves to its real path or is refused: never public for /admin."""
    try:
        public = _policy([], [rule]).is_public("GET", path)
    except BadRequest:
        return
    if public and rule not in ("/", "~.*"):
        assert policy_path(path).startswith("/static/")
        assert "admin" not in policy_path(path)


@pytest.mark.parametrize(
    "path",
    ["/static/../admin", "/static/%2e%2e/admin", "/static/%2E%2E%2Fadmin", "/static/..;/admin"],
)
def test_a_spelling_that_reads_two_ways_is_refused(path: str) -> None:
    with pytest.raises(BadRequest):
        _policy([], ["/static/"]).is_public("GET", path)


def test_a_harmless_spelling_resolves() -> None:
    assert _policy([], ["/static/"]).is_public("GET", "/static//app.js")
    assert not _policy([], ["/static/"]).is_public("GET", "//admin")


@given(st.text(alphabet="/.;%2eEfF5cC\\admin", max_size=20))
def test_what_is_public_is_public_under_every_reading(tail: str) -> None:
    """Whatever is let through lies under the public prefix however a server reads it."""
    path = "/static/" + tail
    try:
        if not _policy([], ["/static/"]).is_public("GET", path):
            return
    except BadRequest:
        return
    assert policy_path(path).startswith("/static")
    assert plain_path(path).startswith("/static/")


# --- parsing rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "method"),
    [
        ("/static/", None),
        ("GET /static/", "GET"),
        ("get /static/", "GET"),
        ("  GET   /static/  ", "GET"),
        ("~^/api/", None),
        ("POST ~^/api/", "POST"),
        ("~^/a b", None),
    ],
)
def test_parse_public_rule(entry: str, method: str | None) -> None:
    assert parse_public_rule(entry).method == method


@pytest.mark.parametrize(
    "entry",
    ["", "static/", "GET", "GET static/", "G3T /static/", "GET POST /x", "~(", "GET ~[", "*"],
)
def test_malformed_public_rules(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_public_rule(entry)


def test_policy_refuses_a_malformed_rule() -> None:
    with pytest.raises(ValueError):
        _policy([], ["/ok/", "not a rule"])


# --- CORS preflights ------------------------------------------------------------------------

PREFLIGHT = {
    "REQUEST_METHOD": "OPTIONS",
    "HTTP_ORIGIN": "https://spa.example.test",
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PUT",
}


@pytest.mark.parametrize(
    "framing",
    [{}, {"CONTENT_LENGTH": ""}, {"CONTENT_LENGTH": "0"}, {"CONTENT_LENGTH": "000"}],
    ids=["no-length", "empty-length", "zero", "zeros"],
)
def test_a_preflight_has_no_body(framing: dict[str, str]) -> None:
    assert _policy([], []).is_preflight({**PREFLIGHT, **framing})


@pytest.mark.parametrize(
    "framing",
    [
        {"CONTENT_LENGTH": "1"},
        {"CONTENT_LENGTH": "10"},
        {"CONTENT_LENGTH": "-0"},
        {"CONTENT_LENGTH": "0x0"},
        {"CONTENT_LENGTH": "abc"},
        {"HTTP_TRANSFER_ENCODING": "chunked"},
        {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "0"},
        {"HTTP_TRANSFER_ENCODING": "gzip, chunked"},
        {"HTTP_TRANSFER_ENCODING": ""},
    ],
    ids=lambda framing: ",".join(f"{k}={v}" for k, v in framing.items()),
)
def test_an_options_request_with_a_body_is_not_a_preflight(framing: dict[str, str]) -> None:
    """A body would reach the app without login; browsers never send one with a preflight.
    Any Transfer-Encoding counts, even for a chunked body that turns out empty."""
    assert not _policy([], []).is_preflight({**PREFLIGHT, **framing})


@pytest.mark.parametrize(
    "environ",
    [
        {**PREFLIGHT, "REQUEST_METHOD": "POST"},
        {k: v for k, v in PREFLIGHT.items() if k != "HTTP_ORIGIN"},
        {k: v for k, v in PREFLIGHT.items() if k != "HTTP_ACCESS_CONTROL_REQUEST_METHOD"},
    ],
    ids=["post", "no-origin", "no-request-method"],
)
def test_what_else_is_not_a_preflight(environ: dict[str, str]) -> None:
    assert not _policy([], []).is_preflight(environ)


def test_preflights_need_a_session_when_allow_preflight_is_off() -> None:
    policy = AccessPolicy(AccessSettings(allow_preflight=False))
    assert not policy.is_preflight(dict(PREFLIGHT))
