"""Reading the gateway's cookie from ``Cookie`` and stripping the gateway's cookies from it.

The two must agree on what a cookie is; both have a shortcut for a header with a single
pair, checked here against the general rule on arbitrary headers.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cookies import request_cookies
from gateway.proxy import filter_cookie_header

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
