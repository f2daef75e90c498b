"""Reading the gateway's cookie from ``Cookie`` and stripping the gateway's cookies from it;
writing ``Set-Cookie`` for them.

The two readers must agree on what a cookie is; both have a shortcut for a header with a
single pair, checked here against the general rule on arbitrary headers. ``CookieSpec``
must obey the ``__Host-`` and ``__Secure-`` name prefixes whatever it is asked for.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.cookies import (
    HOST_PREFIX,
    SECURE_PREFIX,
    CookieSpec,
    cookie_prefix,
    request_cookies,
)
from gateway.proxy.request import filter_cookie_header

NAMES = frozenset({"wechat_gateway", "wechat_gateway_login"})


def reference_filter(value: str) -> str:
    """Pairs split at ``;``; within a pair, comma pieces naming a gateway cookie go."""

    def name_of(text: str) -> str:
        return text.split("=", 1)[0].strip()

    kept = []
    for part in value.split(";"):
        pieces = part.split(",")
        if any(name_of(piece) in NAMES for piece in pieces):
            part = ",".join(piece for piece in pieces if name_of(piece) not in NAMES)
        if name_of(part) and name_of(part) not in NAMES:
            kept.append(part.strip())
    return "; ".join(kept)


def reference_values(header: str) -> list[str]:
    values = []
    for part in re.split(r"[;,]", header):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "wechat_gateway":
            values.append(value.strip().strip('"'))
    return values


@pytest.mark.parametrize(
    ("header", "values", "upstream_sees"),
    [
        ("wechat_gateway=abc", ["abc"], ""),
        (" wechat_gateway = abc ", ["abc"], ""),
        ('wechat_gateway="abc"', ["abc"], ""),
        ("wechat_gateway", [], ""),
        ("wechat_gateway_login=xyz", [], ""),
        ("wechat_gatewayx=1", [], "wechat_gatewayx=1"),
        ("app=1", [], "app=1"),
        ("app=wechat_gateway", [], "app=wechat_gateway"),
        ("app=1; wechat_gateway=abc; theme=dark", ["abc"], "app=1; theme=dark"),
        ("wechat_gateway=a, wechat_gateway=b", ["a", "b"], ""),
        ("app=1,wechat_gateway=abc", ["abc"], "app=1"),
        # Browsers send commas inside values; an app's value stays whole.
        ('prefs=a,b; wechat_gateway=abc; tz="x y"', ["abc"], 'prefs=a,b; tz="x y"'),
        ("list=1,2,3; wechat_gateway=abc", ["abc"], "list=1,2,3"),
        ("prefs=a, b; wechat_gateway=abc", ["abc"], "prefs=a, b"),
    ],
)
def test_cookie_headers(header: str, values: list[str], upstream_sees: str) -> None:
    assert request_cookies({"HTTP_COOKIE": header}, "wechat_gateway") == values
    assert filter_cookie_header(header, NAMES) == upstream_sees


def test_no_cookie_header() -> None:
    assert request_cookies({}, "wechat_gateway") == []
    assert request_cookies({"HTTP_COOKIE": ""}, "wechat_gateway") == []


pieces = st.sampled_from(
    ["wechat_gateway", "wechat_gateway_login", "app", "=", ";", ",", " ", '"', "x", "_login"]
)


@given(st.lists(pieces, max_size=12).map("".join))
def test_shortcuts_agree_with_the_general_rule(header: str) -> None:
    assert filter_cookie_header(header, NAMES) == (
        reference_filter(header) if any(name in header for name in NAMES) else header
    )
    assert request_cookies({"HTTP_COOKIE": header}, "wechat_gateway") == reference_values(header)


# --- Set-Cookie under the name prefixes of RFC 6265bis 4.1.3 --------------------------------


def attributes(header: tuple[str, str]) -> dict[str, str]:
    """``Set-Cookie`` attributes, lower-cased names -> values (``""`` for a flag)."""
    name, value = header
    assert name == "Set-Cookie"
    _, *parts = value.split("; ")
    return {key.lower(): val for key, _, val in (part.partition("=") for part in parts)}


def both_headers(spec: CookieSpec) -> list[dict[str, str]]:
    return [attributes(spec.set("value", 60)), attributes(spec.clear())]


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("__Host-wg", HOST_PREFIX),
        ("__host-wg", HOST_PREFIX),
        ("__HOST-wg_login", HOST_PREFIX),
        ("__Secure-wg", SECURE_PREFIX),
        ("__secure-wg", SECURE_PREFIX),
        ("wechat_gateway", None),
        ("__Host_wg", None),
        ("_Host-wg", None),
        ("wg__Host-", None),
    ],
)
def test_cookie_prefix_is_matched_in_any_case(name: str, prefix: str | None) -> None:
    assert cookie_prefix(name) == prefix


@pytest.mark.parametrize("name", ["__Host-wg_login", "__host-wg_login"])
def test_a_host_prefixed_cookie_is_secure_on_path_slash_without_domain(name: str) -> None:
    spec = CookieSpec(name, path="/_gateway/", secure=False, domain=".example.com")

    assert (spec.path, spec.secure, spec.domain) == ("/", True, None)
    for header in both_headers(spec):
        assert header["path"] == "/"
        assert "secure" in header
        assert "domain" not in header


@pytest.mark.parametrize("name", ["__Secure-wg_login", "__secure-wg_login"])
def test_a_secure_prefixed_cookie_is_secure_and_keeps_its_scope(name: str) -> None:
    spec = CookieSpec(name, path="/_gateway/", secure=False, domain=".example.com")

    assert (spec.path, spec.secure, spec.domain) == ("/_gateway/", True, ".example.com")
    for header in both_headers(spec):
        assert header["path"] == "/_gateway/"
        assert header["domain"] == ".example.com"
        assert "secure" in header


def test_a_cookie_without_a_prefix_is_set_as_asked() -> None:
    spec = CookieSpec("wechat_gateway_login", path="/_gateway/", secure=False)

    for header in both_headers(spec):
        assert header["path"] == "/_gateway/"
        assert "secure" not in header
        assert "domain" not in header
        assert header["samesite"] == "Lax"
        assert "httponly" in header
    assert attributes(spec.clear())["max-age"] == "0"


def test_prefixed_gateway_cookies_are_stripped_from_the_upstream_request() -> None:
    names = frozenset({"__Host-wg", "__Host-wg_login"})
    header = "app=1; __Host-wg=abc; __Host-wg_login=xyz; __Host-wgx=2"

    assert filter_cookie_header(header, names) == "app=1; __Host-wgx=2"
    assert request_cookies({"HTTP_COOKIE": header}, "__Host-wg") == ["abc"]
