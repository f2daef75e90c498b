"""Tests for :mod:`gateway.redirects`, the check that keeps ``rd`` from being an open redirect.

Three layers: the shared corpus of hostile and benign targets (derived from oauth2-proxy's),
a table of our own grouped by attack class for two typical ``public_url`` values, and
Hypothesis properties that hold for any input at all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth.redirects import RedirectPolicy

# --- the shared corpus ------------------------------------------------------------------

_CORPUS_FILE = Path(__file__).resolve().parents[1] / "data" / "openredirects.jsonl"

#: The allowed hosts the corpus's ``expect_valid`` was written for (shared/data/README.md).
_CORPUS_ALLOWED_DOMAINS = (
    "foo.bar",
    ".bar.foo",
    "port.bar:8080",
    ".sub.port.bar:8080",
    "anyport.bar:*",
    ".sub.anyport.bar:*",
    "www.whitelisteddomain.tld",
    "*.wildcard.sub.port.bar:8080",
    "*.wildcard.sub.anyport.bar:*",
    "*.wildcard.bar",
    "*.wildcard.proxy.foo.bar",
)


def _load_corpus() -> list[tuple[str, bool]]:
    # CI always checks out shared/ beside the repository; a missing corpus must fail the
    # run rather than quietly shrink it to nothing.
    if not _CORPUS_FILE.is_file():
        raise FileNotFoundError(
            f"redirect corpus not found at {_CORPUS_FILE}; shared/ must sit beside the repo"
        )
    cases = []
    for line in _CORPUS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            cases.append((entry["decoded"], entry["expect_valid"]))
    return cases


_CORPUS = _load_corpus()
_CORPUS_IDS = [f"line{number:03d}" for number in range(1, len(_CORPUS) + 1)]

#: Configured as the corpus expects, on an origin none of its targets use.
_CORPUS_POLICY = RedirectPolicy("https://gateway.test", _CORPUS_ALLOWED_DOMAINS)

_INTRANET = RedirectPolicy("https://intranet.example.com")
#: With a trailing slash, which must not matter.
_LOOPBACK = RedirectPolicy("http://127.0.0.1:8000/")

#: Spellings of each policy's origin that the reference check below accepts.
_INTRANET_ORIGINS = frozenset({"https://intranet.example.com", "https://intranet.example.com:443"})
_LOOPBACK_ORIGINS = frozenset({"http://127.0.0.1:8000"})


def test_corpus_is_complete() -> None:
    assert len(_CORPUS) >= 600
    assert any(valid for _, valid in _CORPUS)
    assert any(not valid for _, valid in _CORPUS)


@pytest.mark.parametrize(("target", "expect_valid"), _CORPUS, ids=_CORPUS_IDS)
def test_corpus_with_allowed_domains(target: str, expect_valid: bool) -> None:
    assert _CORPUS_POLICY.is_safe(target) is expect_valid
    assert _CORPUS_POLICY.safe_target(target) == (target if expect_valid else "/")


@pytest.mark.parametrize(("target", "expect_valid"), _CORPUS, ids=_CORPUS_IDS)
def test_corpus_without_allowed_domains(target: str, expect_valid: bool) -> None:
    # Only the gateway's own origin is allowed: every valid target in the corpus is either a
    # path, which stays, or a URL on some other host, which falls back.
    expected = target if expect_valid and target.startswith("/") else "/"
    assert _INTRANET.safe_target(target) == expected
    assert _LOOPBACK.safe_target(target) == expected


# --- our own table ----------------------------------------------------------------------

#: Targets both policies return unchanged.
_BENIGN_PATHS = [
    "/",
    "/app",
    "/app/",
    "/app?x=1#frag",
    "/app?x=1&y=2",
    "/a/b/c.html",
    "/search?q=a%20b",
    "/search?q=a+b",
    "/wiki/Caf%C3%A9",
    "/%E4%B8%AD%E6%96%87/",
    "/api/v4/projects/group%2Fproject",
    "/files/100%25.txt",
    "/.well-known/openid-configuration",
    "/a/.../b",
    "/a..b/c",
    "/~user/",
    "/a:b",
    "/path;params?x=y",
    "/#top",
    "/?",
    "/#",
    "/app?redirect=%2Fhome",
    "/app?email=a%40b.example",
    "/app/@user",
    "/x?a=b/c",
    "/x#/route/a",
]

_BENIGN_INTRANET = [
    "https://intranet.example.com",
    "https://intranet.example.com/",
    "https://intranet.example.com/x",
    "https://INTRANET.example.com:443/x",
    "https://Intranet.Example.Com/x?y=1#z",
    "https://intranet.example.com:443",
    "https://intranet.example.com?x=1",
    "https://intranet.example.com#frag",
]

_BENIGN_LOOPBACK = [
    "http://127.0.0.1:8000",
    "http://127.0.0.1:8000/",
    "http://127.0.0.1:8000/x?y=1#z",
]

#: Targets both policies must turn into "/", by attack class. Some are harmless in a
#: browser but refused on purpose (see the module docstring); they are marked.
_HOSTILE: dict[str, list[str]] = {
    "scheme-relative": [
        "//evil.com",
        "//evil.com/",
        "//evil.com/path?x=1",
        "///evil.com",
        "////evil.com",
        "//intranet.example.com",
        "//intranet.example.com@evil.com",
        "//evil.com:443",
        "//127.0.0.1:8000/",
    ],
    "backslash": [
        "/\\evil.com",
        "\\/evil.com",
        "\\\\evil.com",
        "\\evil.com",
        "/\\/evil.com",
        "//\\evil.com",
        "/a\\b",  # harmless, refused: no legitimate target has a raw backslash
        "/app?next=\\evil.com",
        "https://intranet.example.com\\@evil.com",
        "https://evil.com\\@intranet.example.com",
        "https://intranet.example.com\\evil.com",
        "https:\\\\evil.com",
        "https:/\\evil.com",
        "https://\\evil.com",
        "/https:/\\evil.com/",
    ],
    "whitespace-and-controls": [
        "/\t/evil.com",
        "/\n/evil.com",
        "/\r/evil.com",
        "/\r\n/evil.com",
        "/\x0b/evil.com",
        "/\x0c/evil.com",
        "\t//evil.com",
        " /app",
        "  //evil.com",
        "/app ",
        "/app\t",
        "\x00/app",
        "/app\x00",
        "/\x00/evil.com",
        "/app\x7f",
        "\x7f/app",
        "/a b",
        "/app\r\nSet-Cookie: session=forged",
        "\x01/app",
        "/\x1f/evil.com",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "https://intranet.example.com/\t",
        " https://intranet.example.com/",
        "https://intranet.example.com /",
        "https:/\t/evil.com",
        "https://evil.com\t@intranet.example.com",
    ],
    "dot-segments": [
        "/./\\evil.com",
        "/.//evil.com",
        "/..//evil.com",
        "/./evil.com",  # harmless, refused: browsers never send dot segments
        "/a/b/../c",  # harmless, refused: as above
        "/a/./b",
        "/a/..",
        "/a/.",
        "/.",
        "/..",
        "/../evil.com",
        "/app/..?x=1",
        "/app/.#x",
        "/a/%2e%2e/b",
        "/%2e/%2fevil.com",
        "/%2e%2e//evil.com",
        "/.%2e/evil.com",
        "/%2E%2E/%2E%2E//evil.com",
    ],
    "percent-encoded": [
        "/%2F%2Fevil.com",
        "/%2f%2fevil.com",
        "/%2F/evil.com",
        "/%5Cevil.com",
        "/%5cevil.com",
        "/%2F%5Cevil.com",
        "/%5C%2Fevil.com",
        "/%09/evil.com",
        "/%0a/evil.com",
        "/%0d%0a/evil.com",
        "/%00",
        "/%7f",
        "/%20/evil.com",
        "/%252F%252Fevil.com",
        "/%25252F%25252Fevil.com",
        "/%255Cevil.com",
        "%2F%2Fevil.com",
        "%2fapp",
        "/app?next=%2F%2Fevil.com",
        "/app?next=https%3A%2F%2Fevil.com",
        "https://intranet.example.com/%2F%2Fevil.com",
        "https://intranet%2eexample.com/",
        "https://intranet.example.com%2f@evil.com",
        "https://%69ntranet.example.com/",
        "https://intranet.example.com%00.evil.com/",
        "https://intranet.example.com%/",
    ],
    "userinfo": [
        "https://intranet.example.com@evil.com",
        "https://intranet.example.com:443@evil.com",
        "https://intranet.example.com@evil.com/x",
        "https://user:pass@intranet.example.com/",
        "https://@intranet.example.com/",
        "https://:@intranet.example.com/",
        "https://evil.com#@intranet.example.com",
        "https://evil.com?@intranet.example.com",
        "https://intranet.example.com%40evil.com",
        "https://intranet.example.com%2540evil.com",
        "https://evil.com@intranet.example.com",
        "http://127.0.0.1:8000@evil.com/",
        "http://evil.com@127.0.0.1:8000/",
    ],
    "schemes": [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "JAVASCRIPT:alert(1)",
        "javascript://intranet.example.com/%0aalert(1)",
        "javascript://%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "VBScript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://intranet.example.com/",
        "ws://intranet.example.com/",
        "wss://intranet.example.com/",
        "blob:https://intranet.example.com/0b3c",
        "HTTPS://evil.com/",
        "HTTPS://intranet.example.com/",
        "Https://intranet.example.com/",
        "hTTps://intranet.example.com/",
        "HTTP://127.0.0.1:8000/",
        "https:intranet.example.com/x",
        "https:/intranet.example.com/x",
        "https:///intranet.example.com/x",
        "https:////evil.com",
        "mailto:a@evil.com",
        "about:blank",
        "intent://evil.com#Intent;end",
        "x-https://intranet.example.com/",
    ],
    "not-a-path": [
        "",
        "evil.com",
        "intranet.example.com",
        "intranet.example.com/x",
        "app",
        "app/x",
        "?next=/",
        "#/route",
        ".",
        "..",
        "./app",
        "../app",
        "@evil.com",
        ";/evil.com",
        ":/evil.com",
        "<>//evil.com",
    ],
    "look-alikes": [
        "\uff0f\uff0fevil.com",  # FULLWIDTH SOLIDUS
        "/\uff0fevil.com",
        "\uff0f/evil.com",
        "/\u2044evil.com",  # FRACTION SLASH
        "/\u2215evil.com",  # DIVISION SLASH
        "/\ufe68evil.com",  # SMALL REVERSE SOLIDUS
        "/\uff3cevil.com",  # FULLWIDTH REVERSE SOLIDUS
        "\uff3c\uff3cevil.com",
        "https://intranet.example.com\u3002evil.com",  # IDEOGRAPHIC FULL STOP
        "https://evil\u3002com",
        "https://intranet\uff0eexample\uff0ecom/",  # FULLWIDTH FULL STOP
        "https://intranet\uff61example\uff61com/",  # HALFWIDTH IDEOGRAPHIC FULL STOP
        "https://intranet.example.com\uff0f@evil.com",
        "https://intranet.example.com\u2215@evil.com",
        "https://\u0456ntranet.example.com/",  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I
        "https://\uff49ntranet.example.com/",  # FULLWIDTH i: harmless after IDNA, refused
        "https://intranet.example.com\u00ad/",  # SOFT HYPHEN, dropped by IDNA
        "/app/caf\u00e9",  # harmless, refused: non-ASCII must arrive percent-encoded
        "/\u200b/evil.com",  # ZERO WIDTH SPACE
        "/\u00a0/evil.com",  # NO-BREAK SPACE
        "/\u3000/evil.com",  # IDEOGRAPHIC SPACE
    ],
    "host-tricks": [
        "https://intranet.example.com./x",
        "https://intranet.example.com../x",
        "https://.intranet.example.com/",
        "https://intranet..example.com/",
        "https://intranet.example.com.evil.com/",
        "https://evilintranet.example.com/",
        "https://evil-intranet.example.com/",
        "https://sub.intranet.example.com/",
        "https://intranet.example.com:8443/",
        "https://intranet.example.com:80/",
        "https://intranet.example.com:/x",
        "https://intranet.example.com:0443/",
        "https://intranet.example.com:443:443/",
        "https://intranet.example.com:99999/",
        "https://intranet.example.com:65979/",  # 443 + 65536, for parsers that wrap
        "https://intranet.example.com:-443/",
        "https://intranet.example.com:+443/",
        "https://intranet.example.com:443a/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]:8000/",
        "https://evil.com/intranet.example.com",
        "https://evil.com?intranet.example.com",
        "https://evil.com#intranet.example.com",
        "http://intranet.example.com/",
        "https://127.0.0.1:8000/",
        "http://127.0.0.1/",
        "http://127.0.0.1:80/",
        "http://127.0.0.1:08000/",
        "http://127.1:8000/",  # the same address to a browser; refused, not interpreted
        "http://0x7f.0.0.1:8000/",
        "http://2130706433:8000/",
        "http://localhost:8000/",
        "http://[::1]:8000/",
        "http://127.0.0.1.:8000/",
        "http://127\u30020\u30020\u30021:8000/",
        "https:// intranet.example.com/",
        "https:///",
        "https://",
        "https://:443/",
    ],
    "chained-redirects": [
        "/redirect?url=//evil.com",
        "/login?next=https://evil.com",
        "/app#//evil.com",
        "/app?x=/../y",
        "/http://evil.com",
        "https://intranet.example.com/redirect?url=//evil.com",
        "https://intranet.example.com//evil.com",
        "http://127.0.0.1:8000//evil.com",
    ],
}

_HOSTILE_CASES = [
    pytest.param(target, id=f"{attack}[{index}]")
    for attack, targets in _HOSTILE.items()
    for index, target in enumerate(targets)
]


@pytest.mark.parametrize("target", _BENIGN_PATHS)
@pytest.mark.parametrize("policy", [_INTRANET, _LOOPBACK], ids=["intranet", "loopback"])
def test_benign_paths_are_kept(policy: RedirectPolicy, target: str) -> None:
    assert policy.is_safe(target)
    assert policy.safe_target(target) == target


@pytest.mark.parametrize("target", _BENIGN_INTRANET)
def test_own_origin_urls_are_kept_as_they_are(target: str) -> None:
    assert _INTRANET.safe_target(target) == target
    assert _LOOPBACK.safe_target(target) == "/"


@pytest.mark.parametrize("target", _BENIGN_LOOPBACK)
def test_own_loopback_urls_are_kept_as_they_are(target: str) -> None:
    assert _LOOPBACK.safe_target(target) == target
    assert _INTRANET.safe_target(target) == "/"


@pytest.mark.parametrize("target", _HOSTILE_CASES)
@pytest.mark.parametrize("policy", [_INTRANET, _LOOPBACK], ids=["intranet", "loopback"])
def test_hostile_targets_fall_back(policy: RedirectPolicy, target: str) -> None:
    assert not policy.is_safe(target)
    assert policy.safe_target(target) == "/"


def test_none_falls_back() -> None:
    assert not _INTRANET.is_safe(None)
    assert _INTRANET.safe_target(None) == "/"


def test_length_is_capped() -> None:
    longest = "/" + "a" * 2047
    assert _INTRANET.safe_target(longest) == longest
    assert _INTRANET.safe_target(longest + "a") == "/"
    assert _INTRANET.safe_target("/" + "%2e" * 100_000) == "/"


@pytest.mark.parametrize(
    "public_url",
    [
        "https://intranet.example.com",
        "https://intranet.example.com/",
        "https://INTRANET.Example.com",
        "https://intranet.example.com:443",
        "HTTPS://intranet.example.com/some/path",
    ],
)
def test_public_url_spellings_give_one_origin(public_url: str) -> None:
    policy = RedirectPolicy(public_url)
    assert policy.safe_target("https://intranet.example.com/x") == "https://intranet.example.com/x"
    assert policy.safe_target("http://intranet.example.com/x") == "/"
    assert policy.safe_target("https://intranet.example.com:8443/x") == "/"


def test_ipv6_public_url_honours_paths_only() -> None:
    policy = RedirectPolicy("http://[::1]:8000")
    assert policy.safe_target("/app") == "/app"
    assert policy.safe_target("http://[::1]:8000/app") == "/"


@pytest.mark.parametrize(
    "public_url",
    ["", "intranet.example.com", "ftp://intranet.example.com", "https://", "https://:443", "x:y"],
)
def test_unusable_public_url_is_refused(public_url: str) -> None:
    with pytest.raises(ValueError, match="public_url"):
        RedirectPolicy(public_url)


# --- allowed_domains --------------------------------------------------------------------

_ALLOWED_DOMAIN_CASES = [
    # exact host: default port of the scheme only, compared case-insensitively
    ("https://foo.bar/", True),
    ("https://FOO.BAR/x", True),
    ("http://foo.bar:80/", True),
    ("https://foo.bar:443/", True),
    ("http://foo.bar:443/", False),
    ("https://foo.bar:8080/", False),
    ("https://x.foo.bar/", False),
    ("https://foo.bar./", False),
    ("https://foo.bar.evil.com/", False),
    # .domain: the domain and every subdomain
    ("https://bar.foo/", True),
    ("https://a.b.bar.foo/", True),
    ("https://evilbar.foo/", False),
    ("https://bar.foo.evil.com/", False),
    # *.domain: like oauth2-proxy, the bare domain too
    ("https://wildcard.bar/", True),
    ("https://a.wildcard.bar/", True),
    ("https://proxy.wildcard.bar.evil/", False),
    ("https://wildcard.proxy.foo.bar/", True),
    ("https://x.wildcard.proxy.foo.bar/", True),
    ("https://proxy.foo.bar/", False),
    # ports
    ("https://port.bar:8080/", True),
    ("https://port.bar/", False),
    ("https://port.bar:8081/", False),
    ("https://port.bar:08080/", False),
    ("https://a.sub.port.bar:8080/", True),
    ("https://x.wildcard.sub.port.bar:8080/", True),
    ("https://x.wildcard.sub.port.bar:9090/", False),
    ("http://anyport.bar/", True),
    ("http://anyport.bar:1/", True),
    ("https://a.sub.anyport.bar:65535/", True),
    ("https://a.sub.anyport.bar:65536/", False),
    # the allowance is for hosts, never for tricks
    ("https://foo.bar@evil.com/", False),
    ("https://evil.com@foo.bar/", False),
    ("https://foo.bar\\@evil.com", False),
    ("https://foo\u3002bar/", False),
    ("javascript://foo.bar/%0aalert(1)", False),
    ("//foo.bar/", False),
    ("foo.bar/redirect", False),
    ("HTTPS://foo.bar/", False),
    ("https://foo.bar//evil.com", False),
    # and the gateway's own origin still counts
    ("https://gateway.test/x", True),
]


@pytest.mark.parametrize(("target", "expected"), _ALLOWED_DOMAIN_CASES)
def test_allowed_domains(target: str, expected: bool) -> None:
    assert _CORPUS_POLICY.is_safe(target) is expected


def test_allowed_domains_are_normalised() -> None:
    policy = RedirectPolicy("https://gateway.test", [" Foo.Bar ", "*.Example.ORG:*"])
    assert policy.is_safe("https://foo.bar/")
    assert policy.is_safe("https://a.example.org:8443/")


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "*.",
        ".",
        "http://foo.bar",
        "foo.bar/",
        "foo.bar:abc",
        "foo.bar:99999",
        "foo.bar:",
        "foo..bar",
        "*.*.bar",
        "[::1]:8080",
        "user@foo.bar",
        "foo bar",
    ],
)
def test_unusable_allowed_domain_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed domain"):
        RedirectPolicy("https://gateway.test", [entry])


# --- properties -------------------------------------------------------------------------


def _lands_on(url: str, origins: frozenset[str]) -> bool:
    """A deliberately naive reading of an absolute URL: ``scheme://authority`` must be one of
    ``origins`` verbatim (host lower-cased). Anything a browser would read differently (a
    backslash, ``@``, a dot or space in the wrong place) makes the authority differ."""
    scheme, separator, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].lower()
    return (
        separator == "://" and scheme in {"http", "https"} and f"{scheme}://{authority}" in origins
    )


def _assert_safe_result(rd: str, result: str, origins: frozenset[str]) -> None:
    assert result in {rd, "/"}
    assert re.fullmatch(r"[\x21-\x7e]+", result)
    if result.startswith("/"):
        assert result[1:2] not in {"/", "\\"}
    else:
        assert _lands_on(result, origins)


#: Pieces that hostile targets are made of, so Hypothesis explores their combinations
#: rather than random text that fails on its first character.
_TOKENS = [
    "/", "//", "\\", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%09", "%40",
    "@", ":", "?", "#", "&", "=", "\t", "\n", "\r", " ", "\x00", "\x7f", "\u3002",
    "\uff0f", "\uff0e", "https:", "http:", "HTTPS:", "javascript:", "https://", "http://",
    "intranet.example.com", "INTRANET.EXAMPLE.COM", "127.0.0.1", ":443", ":8000", ":0443",
    "evil.com", "a", "x=1", "[::1]",
]  # fmt: skip

_assembled = st.lists(st.sampled_from(_TOKENS), max_size=12).map("".join)


@given(rd=st.text())
def test_any_text_gives_a_safe_result(rd: str) -> None:
    _assert_safe_result(rd, _INTRANET.safe_target(rd), _INTRANET_ORIGINS)
    _assert_safe_result(rd, _LOOPBACK.safe_target(rd), _LOOPBACK_ORIGINS)


@settings(max_examples=2000)
@given(rd=_assembled)
def test_assembled_targets_give_a_safe_result(rd: str) -> None:
    _assert_safe_result(rd, _INTRANET.safe_target(rd), _INTRANET_ORIGINS)
    _assert_safe_result(rd, _LOOPBACK.safe_target(rd), _LOOPBACK_ORIGINS)


@given(rd=st.one_of(st.text(), _assembled))
def test_result_is_stable(rd: str) -> None:
    once = _INTRANET.safe_target(rd)
    assert _INTRANET.safe_target(once) == once
    assert _INTRANET.is_safe(rd) is (once == rd)


_segment = st.from_regex(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,15}", fullmatch=True)
_query = st.from_regex(r"[A-Za-z0-9_=&+-]{0,20}", fullmatch=True)


@given(segments=st.lists(_segment, max_size=6), query=_query)
def test_ordinary_paths_are_kept(segments: list[str], query: str) -> None:
    target = "/" + "/".join(segments) + (f"?{query}" if query else "")
    assert _INTRANET.safe_target(target) == target
    assert _INTRANET.safe_target("https://intranet.example.com" + target) == (
        "https://intranet.example.com" + target
    )
