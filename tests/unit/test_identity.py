"""Tests for :mod:`gateway.identity`: what the upstream is told about the user, and how.

The upstream trusts these headers blindly, so the values must be exact (the contract's
encoding, nothing more, nothing less) and always safe to put on a header line. The end to
end behaviour (stripping and injection through the real server) is in
``tests/e2e/test_login.py``, and a profile that WeChat sends with half an emoji in it, through
the real server to ``/_gateway/userinfo`` and to the app, in ``tests/e2e/test_identity.py``.
"""

from __future__ import annotations

import string
from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.session import Session
from gateway.identity.headers import (
    APPID,
    AVATAR,
    NICKNAME,
    OPENID,
    PROVIDER,
    UNIONID,
    encode_avatar,
    encode_nickname,
    identity_headers,
    is_client_identity_key,
    utf8,
)

UNRESERVED = string.ascii_letters + string.digits + "-._~"
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]


def _session(**fields: object) -> Session:
    values: dict[str, object] = {
        "openid": "oWX3Z5dKk2bVf0Yx3Qd8hT1nGq2A",
        "app_id": "wx5e1a2b3c4d5e6f70",
        "unionid": "o6_bmasdasdsad6_2sgVt7hMZOPfL",
        "nickname": "张三",
        "avatar": "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTK/132",
        "issued_at": 1_700_000_000,
        "expires_at": 1_700_604_800,
    }
    values.update(fields)
    return Session(**values)  # type: ignore[arg-type]


def _is_header_safe(value: str) -> bool:
    """Printable ASCII only: no CR, LF, NUL or other control, nothing latin-1 would mangle."""
    return all(" " <= char <= "~" for char in value)


# --- encode_nickname ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nickname", "header"),
    [
        ("张三\x14🚀", "%E5%BC%A0%E4%B8%89%F0%9F%9A%80"),
        ("Alice", "Alice"),
        ("", ""),
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("100%", "100%25"),
        ("a/b?c#d&e=f", "a%2Fb%3Fc%23d%26e%3Df"),
        ('"quoted" \\ back', "%22quoted%22%20%5C%20back"),
        ("line\r\nX-WeChat-OpenID: forged", "lineX-WeChat-OpenID%3A%20forged"),
        ("tab\there", "tabhere"),
        ("nul\x00byte", "nulbyte"),
        ("del\x7fete", "delete"),
        ("c1\x85\x9fend", "c1end"),
        ("\xa0nbsp", "%C2%A0nbsp"),  # U+00A0 is not a control: kept, encoded
        ("Ünïcödé", "%C3%9Cn%C3%AFc%C3%B6d%C3%A9"),
        ("👨‍👩‍👧", "%F0%9F%91%A8%E2%80%8D%F0%9F%91%A9%E2%80%8D%F0%9F%91%A7"),
        ("half \ud83d emoji", "half%20%EF%BF%BD%20emoji"),
    ],
)
def test_encode_nickname(nickname: str, header: str) -> None:
    assert encode_nickname(nickname) == header


def test_unreserved_characters_stay_literal() -> None:
    assert encode_nickname(UNRESERVED) == UNRESERVED


@pytest.mark.parametrize("char", [c for c in map(chr, range(0x20, 0x7F)) if c not in UNRESERVED])
def test_every_other_ascii_character_is_encoded(char: str) -> None:
    assert encode_nickname(char) == f"%{ord(char):02X}"


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_every_control_character_is_removed(control: str) -> None:
    assert encode_nickname(f"a{control}b") == "ab"


@given(st.text())
def test_any_nickname_becomes_a_safe_header_that_decodes_back(nickname: str) -> None:
    header = encode_nickname(nickname)
    assert _is_header_safe(header)
    assert "\r" not in header and "\n" not in header
    expected = "".join(char for char in nickname if char not in CONTROLS)
    assert unquote(header, errors="strict") == expected


# Lone surrogates: json.loads accepts "\ud83d" without its other half. Joined by hand:
# st.text() leaves surrogates out of almost every string, whatever its alphabet.
_BROKEN_TEXT = st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))).map(
    "".join
)


@given(_BROKEN_TEXT)
def test_even_broken_text_is_valid_utf8(nickname: str) -> None:
    header = encode_nickname(nickname)
    assert _is_header_safe(header)
    unquote_to_bytes(header).decode("utf-8")  # never raises


# --- encode_avatar ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("avatar", "header"),
    [
        (
            "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTK/132",
            "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTK/132",
        ),
        ("https://a.example/p?x=1&y=%2F#f", "https://a.example/p?x=1&y=%2F#f"),
        ("https://a.example/头像.png", "https://a.example/%E5%A4%B4%E5%83%8F.png"),
        ("https://a.example/a b", "https://a.example/a%20b"),
        ("https://a.example/\r\nX-Evil: 1", "https://a.example/X-Evil:%201"),
        ("https://a.example/\x00\x7f\x85", "https://a.example/"),
        ('https://a.example/"<>', "https://a.example/%22%3C%3E"),
    ],
)
def test_encode_avatar(avatar: str, header: str) -> None:
    assert encode_avatar(avatar) == header


@given(_BROKEN_TEXT)
def test_any_avatar_becomes_a_safe_header(avatar: str) -> None:
    header = encode_avatar(avatar)
    assert _is_header_safe(header)
    assert " " not in header


# --- identity_headers ---------------------------------------------------------------------


def test_identity_headers() -> None:
    assert identity_headers(_session(nickname="张三\x14🚀")) == (
        (OPENID, "oWX3Z5dKk2bVf0Yx3Qd8hT1nGq2A"),
        (APPID, "wx5e1a2b3c4d5e6f70"),
        (UNIONID, "o6_bmasdasdsad6_2sgVt7hMZOPfL"),
        (NICKNAME, "%E5%BC%A0%E4%B8%89%F0%9F%9A%80"),
        (AVATAR, "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTK/132"),
        (PROVIDER, "wechat"),
    )


def test_header_names_are_the_contracts() -> None:
    names = (OPENID, APPID, UNIONID, NICKNAME, AVATAR)
    assert names == (
        "X-WeChat-OpenID",
        "X-WeChat-AppID",
        "X-WeChat-UnionID",
        "X-WeChat-Nickname",
        "X-WeChat-Avatar",
    )


def test_no_unionid_header_without_a_unionid() -> None:
    names = [name for name, _ in identity_headers(_session(unionid=None))]
    assert names == [OPENID, APPID, NICKNAME, AVATAR, PROVIDER]


def test_nickname_and_avatar_headers_are_empty_without_a_profile() -> None:
    """snsapi_base and fetch_profile: false give no profile: the headers are there, empty."""
    headers = identity_headers(_session(nickname="", avatar=""))
    assert [name for name, _ in headers] == [OPENID, APPID, UNIONID, NICKNAME, AVATAR, PROVIDER]
    assert dict(headers)[NICKNAME] == ""
    assert dict(headers)[AVATAR] == ""


def test_an_empty_avatar_is_an_empty_header() -> None:
    assert dict(identity_headers(_session(avatar="")))[AVATAR] == ""


@given(
    openid=st.text(min_size=1),
    unionid=st.one_of(st.none(), st.text(min_size=1)),
    nickname=st.text(),
    avatar=st.text(),
)
def test_every_header_value_is_safe(
    openid: str, unionid: str | None, nickname: str, avatar: str
) -> None:
    session = _session(openid=openid, unionid=unionid, nickname=nickname, avatar=avatar)
    headers = identity_headers(session)
    assert [name for name, _ in headers][:2] == [OPENID, APPID]
    for _, value in headers:
        assert _is_header_safe(value)


# --- is_client_identity_key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "HTTP_X_WECHAT_OPENID",
        "HTTP_X_WECHAT_UNIONID",
        "HTTP_X_WECHAT_NICKNAME",
        "HTTP_X_WECHAT_AVATAR",
        "HTTP_X_WECHAT_APPID",
        "HTTP_X_WECHAT_ANYTHING",
        "HTTP_X_WECHAT_",
    ],
)
def test_client_identity_keys(key: str) -> None:
    assert is_client_identity_key(key)


@pytest.mark.parametrize(
    "key",
    ["HTTP_X_WECHAT", "HTTP_X_WECHATOPENID", "HTTP_WECHAT_OPENID", "X_WECHAT_OPENID", "HTTP_HOST"],
)
def test_other_keys(key: str) -> None:
    assert not is_client_identity_key(key)


@pytest.mark.parametrize(
    "name",
    ["X-WeChat-OpenID", "x-wechat-openid", "X-WECHAT-OPENID", "X_WeChat_OpenID", "X-Wechat_Openid"],
)
def test_every_spelling_maps_to_a_client_identity_key(name: str) -> None:
    """The CGI mapping every WSGI server applies: upper case, ``-`` read as ``_``."""
    assert is_client_identity_key("HTTP_" + name.upper().replace("-", "_"))


# --- utf8 ---------------------------------------------------------------------------------


def test_utf8_replaces_each_lone_surrogate() -> None:
    assert utf8("half \ud83d emoji \udc00!") == "half \ufffd emoji \ufffd!".encode()
    assert utf8("张三🚀") == "张三🚀".encode()


@given(_BROKEN_TEXT)
def test_utf8_never_fails(text: str) -> None:
    assert utf8(text).decode("utf-8") == "".join(
        "\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text
    )
