from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import string
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.auth import session as session_module
from gateway.auth.session import SESSION_PURPOSE, Session, SessionCodec, SessionTooLarge

SECRET = "k7Qz9vXw2LmP4rTs8YbN1cHd6FgJ3aWe"
OLD_SECRET = "old-secret-that-is-long-enough-0123456789"
OTHER_SECRET = "another-deployment-entirely-9876543210abcd"
NOW = 1_700_000_000
WEEK = 7 * 24 * 3600
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
SET_COOKIE_ATTRIBUTES = "; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax; Secure"
LOGIN_STATE = b"login-state"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_session(**changes: object) -> Session:
    session = Session(
        openid="o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
        app_id="wx0123456789abcdef",
        unionid="oTGnpnZ8vDyoa6CQpKdKQtsQs9M0",
        nickname="张三 🐼",
        avatar="https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTLqKic8ZtXq/132",
        issued_at=NOW,
        expires_at=NOW + WEEK,
        refresh_token="81_Q2t2hlBv9nK0bHkYx3fLqzJ7aP1cM6dR8sT4uV5wX0yZ",
        validated_at=NOW,
    )
    return dataclasses.replace(session, **changes)  # type: ignore[arg-type]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codec(clock: Clock) -> SessionCodec:
    return SessionCodec(SECRET, clock=clock)


@pytest.fixture
def token(codec: SessionCodec) -> str:
    return codec.encode(make_session())


# Round trip


@pytest.mark.parametrize(
    "session",
    [
        make_session(),
        make_session(unionid=None, refresh_token=None, validated_at=None),
        make_session(nickname="", avatar=""),
        make_session(nickname="\x00\x1b[31m\r\n\t\x7f\u200b\u2028"),
        make_session(nickname="🙂" * 64),
        make_session(nickname="lone \ud800 surrogate \udfff"),
        make_session(nickname='"quotes", \\backslashes\\ and [brackets]'),
    ],
)
def test_round_trip(codec: SessionCodec, session: Session) -> None:
    assert codec.decode(codec.encode(session)) == session


def test_token_is_cookie_safe_and_fresh_each_time(codec: SessionCodec) -> None:
    first = codec.encode(make_session())
    second = codec.encode(make_session())
    assert re.fullmatch(r"[A-Za-z0-9_-]+", first)
    assert first != second
    assert codec.decode(first) == codec.decode(second) == make_session()


def test_wire_layout(codec: SessionCodec, token: str) -> None:
    raw = unb64(token)
    assert raw[0] == 1
    assert raw[1:5] == unb64(codec.encode(make_session(nickname="x")))[1:5]
    # version, key id, nonce, expiry, tag around the JSON payload
    assert len(raw) > 1 + 4 + 12 + 8 + 16


def test_repr_hides_refresh_token() -> None:
    session = make_session()
    assert session.refresh_token is not None
    assert session.refresh_token not in repr(session)
    assert session.openid in repr(session)


def test_session_helpers() -> None:
    session = make_session(expires_at=NOW + 100)
    assert not session.is_expired(NOW + 99.9)
    assert session.is_expired(NOW + 100)
    assert session.seconds_left(NOW) == 100
    assert session.seconds_left(NOW + 99.9) == 1
    assert session.seconds_left(NOW + 1000) == 0


# Tampering


def test_every_changed_character_is_rejected(codec: SessionCodec, token: str) -> None:
    for position, original in enumerate(token):
        for replacement in B64URL + "=+/. %\x00é":
            if replacement != original:
                forged = token[:position] + replacement + token[position + 1 :]
                assert codec.decode(forged) is None, (position, replacement)


def test_every_flipped_byte_is_rejected(codec: SessionCodec, token: str) -> None:
    raw = unb64(token)
    for position in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            forged = bytearray(raw)
            forged[position] ^= mask
            assert codec.decode(b64(bytes(forged))) is None, (position, mask)


def test_truncation_is_rejected(codec: SessionCodec, token: str) -> None:
    for length in range(len(token)):
        assert codec.decode(token[:length]) is None
    assert codec.decode(b64(unb64(token)[:-1])) is None


@pytest.mark.parametrize("suffix", [*B64URL, "=", "==", "===", " ", ";", "\n"])
def test_extension_is_rejected(codec: SessionCodec, token: str, suffix: str) -> None:
    assert codec.decode(token + suffix) is None


def test_extension_of_bytes_and_repeats_are_rejected(codec: SessionCodec, token: str) -> None:
    assert codec.decode(b64(unb64(token) + b"\x00")) is None
    assert codec.decode(token + token) is None
    assert codec.decode(f'"{token}"') is None
    assert codec.decode(token[:10] + " " + token[10:]) is None


@pytest.mark.parametrize("version", [0, 2, 0x81, 0xFF])
def test_other_versions_are_rejected(codec: SessionCodec, token: str, version: int) -> None:
    raw = unb64(token)
    assert codec.decode(b64(bytes((version,)) + raw[1:])) is None


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "",
        " ",
        "=",
        "====",
        "A",
        "AA",
        "AAA",
        "AAAA",
        "A" * 56,
        "A" * 4096,
        "A" * 4097,
        "A" * 1_000_000,
        "not a cookie",
        "deleted",
        "%41%42",
        "\x00" * 64,
        "🙂" * 64,
        "\ud800" * 64,
        b64(b"\x01" + b"\x00" * 60),
    ],
)
def test_garbage_is_no_session(codec: SessionCodec, garbage: str | None) -> None:
    assert codec.decode(garbage) is None
    assert codec.decode_with_meta(garbage) is None
    assert codec.unseal(garbage, purpose=LOGIN_STATE) is None


@pytest.mark.parametrize("value", [b"bytes", 42, 1.5, ["list"], object()])
def test_non_strings_are_no_session(codec: SessionCodec, value: object) -> None:
    assert codec.decode(value) is None  # type: ignore[arg-type]


def test_oversized_input_is_refused_before_decoding(
    codec: SessionCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded an oversized cookie")

    monkeypatch.setattr(binascii, "a2b_base64", must_not_run)
    assert codec.decode("A" * 4097) is None


@pytest.mark.parametrize("payload_size", [0, 2])
def test_non_canonical_base64_is_rejected(codec: SessionCodec, payload_size: int) -> None:
    # The last character of a token whose length is not a multiple of 3 bytes carries
    # 2 or 4 unused bits; sizes 0 and 2 give one of each.
    token = codec.seal(b"x" * payload_size, purpose=LOGIN_STATE, ttl=60)
    raw = unb64(token)
    unused_bits = {1: 4, 2: 2}[len(raw) % 3]
    last = B64URL.index(token[-1])
    for low_bits in range(1, 1 << unused_bits):
        forged = token[:-1] + B64URL[last | low_bits]
        assert forged != token
        # A lenient base64 decoder reads the same bytes; the codec must not.
        assert unb64(forged) == raw
        assert codec.unseal(forged, purpose=LOGIN_STATE) is None
    assert codec.unseal(token, purpose=LOGIN_STATE) == b"x" * payload_size


def test_standard_alphabet_spelling_is_rejected(codec: SessionCodec, token: str) -> None:
    # ~500 characters: the chance of holding neither "-" nor "_" is about 1e-7.
    standard = token.replace("-", "+").replace("_", "/")
    assert standard != token
    assert codec.decode(standard) is None
    assert codec.decode(standard + "=" * (-len(token) % 4)) is None


# Expiry


def test_expiry_is_enforced_with_the_clock(clock: Clock, codec: SessionCodec) -> None:
    session = make_session(expires_at=NOW + 100)
    token = codec.encode(session)
    clock.now = NOW + 99.999
    assert codec.decode(token) == session
    clock.now = NOW + 100
    assert codec.decode(token) is None
    clock.now = NOW + 10**6
    assert codec.decode(token) is None


def test_already_expired_session_encodes_but_never_decodes(codec: SessionCodec) -> None:
    assert codec.decode(codec.encode(make_session(expires_at=NOW - 1))) is None


def test_sealed_token_expires_after_ttl(clock: Clock, codec: SessionCodec) -> None:
    token = codec.seal(b"state", purpose=LOGIN_STATE, ttl=600)
    clock.now = NOW + 599
    assert codec.unseal(token, purpose=LOGIN_STATE) == b"state"
    clock.now = NOW + 600
    assert codec.unseal(token, purpose=LOGIN_STATE) is None


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_must_be_positive(codec: SessionCodec, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        codec.seal(b"x", purpose=LOGIN_STATE, ttl=ttl)


@pytest.mark.parametrize("expires_at", [-1, 1 << 64])
def test_unrepresentable_expiry_is_refused(codec: SessionCodec, expires_at: int) -> None:
    with pytest.raises(ValueError, match="expires_at"):
        codec.encode(make_session(expires_at=expires_at))


# Keys and rotation


def test_rotation_reads_old_and_writes_new(clock: Clock) -> None:
    session = make_session()
    old_token = SessionCodec(OLD_SECRET, clock=clock).encode(session)
    rotated = SessionCodec(SECRET, [OLD_SECRET], clock=clock)

    assert rotated.decode(old_token) == session
    assert rotated.decode_with_meta(old_token) == (session, True)

    new_token = rotated.encode(session)
    assert rotated.decode_with_meta(new_token) == (session, False)
    assert SessionCodec(SECRET, clock=clock).decode(new_token) == session
    assert SessionCodec(OLD_SECRET, clock=clock).decode(new_token) is None


def test_retired_or_unknown_keys_are_rejected(clock: Clock) -> None:
    old_token = SessionCodec(OLD_SECRET, clock=clock).encode(make_session())
    assert SessionCodec(SECRET, clock=clock).decode(old_token) is None
    assert SessionCodec(SECRET, [OTHER_SECRET], clock=clock).decode(old_token) is None


def test_foreign_cookie_is_rejected(codec: SessionCodec, clock: Clock) -> None:
    foreign = SessionCodec(OTHER_SECRET, clock=clock)
    assert codec.decode(foreign.encode(make_session())) is None
    state = foreign.seal(b"x", purpose=LOGIN_STATE, ttl=60)
    assert codec.unseal(state, purpose=LOGIN_STATE) is None


def test_foreign_cookie_with_our_key_id_is_rejected(codec: SessionCodec, token: str) -> None:
    foreign = unb64(SessionCodec(OTHER_SECRET).encode(make_session()))
    ours = unb64(token)
    assert codec.decode(b64(ours[:5] + foreign[5:])) is None


def test_current_secret_repeated_as_previous_is_not_stale(clock: Clock) -> None:
    codec = SessionCodec(SECRET, [SECRET, OLD_SECRET, OLD_SECRET], clock=clock)
    assert codec.decode_with_meta(codec.encode(make_session())) == (make_session(), False)


def test_keys_are_derived_once(codec: SessionCodec, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("derived a key per request")

    monkeypatch.setattr(session_module, "HKDF", must_not_run)
    assert codec.decode(codec.encode(make_session())) == make_session()


def test_secret_may_hold_any_text(clock: Clock) -> None:
    # os.environ smuggles undecodable bytes in as lone surrogates.
    codec = SessionCodec("密钥\udcff" * 11, clock=clock)
    assert codec.decode(codec.encode(make_session())) == make_session()


def test_short_secret_is_refused_without_echoing_it() -> None:
    secret = "too-short-but-still-secret"
    with pytest.raises(ValueError, match=r"^session\.secret: ") as caught:
        SessionCodec(secret)
    assert secret not in str(caught.value)
    SessionCodec("x" * 32)
    with pytest.raises(ValueError, match=r"^session\.secret: "):
        SessionCodec("x" * 31)


def test_short_previous_secret_is_named() -> None:
    with pytest.raises(ValueError, match=r"session\.previous_secrets\[1\]") as caught:
        SessionCodec(SECRET, [OLD_SECRET, "short-old"])
    assert "short-old" not in str(caught.value)


def test_previous_secrets_as_one_string_is_refused() -> None:
    with pytest.raises(TypeError, match="previous_secrets") as caught:
        SessionCodec(SECRET, OLD_SECRET)
    assert OLD_SECRET not in str(caught.value)


def test_no_secret_in_any_message_or_repr(codec: SessionCodec, clock: Clock) -> None:
    errors: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: SessionCodec(SECRET[:20]),
        lambda: SessionCodec(SECRET, [SECRET[:20]]),
        lambda: SessionCodec(SECRET, SECRET),
        lambda: codec.encode(make_session(nickname="🙂" * 2000)),
        lambda: codec.encode(make_session(issued_at="1")),
        lambda: codec.encode(make_session(expires_at=-1)),
        lambda: codec.seal(SECRET.encode() * 200, purpose=LOGIN_STATE, ttl=60),
        lambda: codec.seal(b"x", purpose=LOGIN_STATE, ttl=0),
    ]
    for attempt in attempts:
        with pytest.raises(Exception) as caught:
            attempt()
        errors.append(caught.value)
    for error in errors:
        for text in (str(error), repr(error)):
            assert SECRET not in text
            assert SECRET[:20] not in text
            assert "🙂" not in text
    assert SECRET not in repr(codec)
    assert all(getattr(codec, slot) != SECRET for slot in SessionCodec.__slots__)


# Size


def test_realistic_large_session_fits_in_a_cookie(codec: SessionCodec) -> None:
    session = make_session(
        nickname="🙂" * 64,
        avatar="https://thirdwx.qlogo.cn/mmopen/vi_32/" + "Q0j4TwGTfTK" * 30 + "/132",
    )
    value = codec.encode(session)
    set_cookie = f"wechat_gateway={value}{SET_COOKIE_ATTRIBUTES}"
    assert len(set_cookie.encode("ascii")) < 4096
    assert codec.decode(value) == session


def test_largest_accepted_session_still_fits(codec: SessionCodec) -> None:
    size = 2000
    while True:
        try:
            value = codec.encode(make_session(nickname="n" * size))
        except SessionTooLarge as error:
            assert error.size > error.limit == 3800
            break
        largest = value
        size += 1
    assert len(largest) <= 3800
    assert len(f"wechat_gateway={largest}{SET_COOKIE_ATTRIBUTES}") < 4096
    assert codec.decode(largest) is not None


def test_absurd_session_is_refused(codec: SessionCodec) -> None:
    with pytest.raises(SessionTooLarge, match="over the limit of 3800"):
        codec.encode(make_session(nickname="🙂" * 1000))
    with pytest.raises(SessionTooLarge):
        codec.seal(b"x" * 3000, purpose=LOGIN_STATE, ttl=60)
    assert issubclass(SessionTooLarge, ValueError)


@pytest.mark.parametrize(
    "changes",
    [{"issued_at": "1"}, {"issued_at": True}, {"openid": None}, {"validated_at": 1.5}],
)
def test_mistyped_fields_are_refused(codec: SessionCodec, changes: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        codec.encode(make_session(**changes))


# Purposes


def test_purposes_are_isolated(codec: SessionCodec, token: str) -> None:
    state = codec.seal(b"state-payload", purpose=LOGIN_STATE, ttl=600)
    assert codec.unseal(state, purpose=LOGIN_STATE) == b"state-payload"
    assert codec.unseal(state, purpose=b"login-stat") is None
    assert codec.unseal(state, purpose=b"login-state\x00") is None
    assert codec.unseal(state, purpose=SESSION_PURPOSE) is None
    assert codec.decode(state) is None
    assert codec.unseal(token, purpose=LOGIN_STATE) is None
    assert codec.unseal(token, purpose=SESSION_PURPOSE) is not None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"garbage",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"o":"x"}',
        b"[" * 2000,
        b'["o","wx",null,"n","a",1,null]',
        b'["o","wx",null,"n","a",1,null,null,null]',
        b'["o","wx",null,"n","a",1,null,null] ',
        b' ["o","wx",null,"n","a",1,null,null]',
        b'["o","wx",null,"n","a",1,null,null][]',
        b'["o","wx",null,"n","a",true,null,null]',
        b'["o","wx",null,"n","a",1.0,null,null]',
        b'["o","wx",5,"n","a",1,null,null]',
        b'["o","wx",null,"n","a",1,null,NaN]',
        b'[null,"wx",null,"n","a",1,null,null]',
    ],
    ids=repr,
)
def test_odd_payloads_sealed_as_sessions_are_no_session(
    codec: SessionCodec, payload: bytes
) -> None:
    assert codec.decode(codec.seal(payload, purpose=SESSION_PURPOSE, ttl=60)) is None


def test_minimal_payload_sealed_as_session_decodes(codec: SessionCodec) -> None:
    token = codec.seal(b'["o","wx",null,"n","a",1,null,null]', purpose=SESSION_PURPOSE, ttl=60)
    assert codec.decode(token) == Session("o", "wx", None, "n", "a", 1, NOW + 60)


# Properties

_PROPERTY_CODEC = SessionCodec(SECRET, clock=lambda: NOW)
_PROPERTY_TOKEN = _PROPERTY_CODEC.encode(make_session())
_PROPERTY_KEY_ID = unb64(_PROPERTY_TOKEN)[1:5]

# Every code point, control characters and lone surrogates included; short enough that
# even six-byte JSON escapes in all five text fields stay under the size limit.
_any_text = st.text(
    st.one_of(st.characters(), st.sampled_from("\x00\x1f\x7f\u2028\ud800")), max_size=64
)
_timestamps = st.integers(min_value=-(2**63), max_value=2**63)


@given(
    st.builds(
        Session,
        openid=_any_text,
        app_id=_any_text,
        unionid=st.none() | _any_text,
        nickname=_any_text,
        avatar=_any_text,
        issued_at=_timestamps,
        expires_at=st.integers(min_value=NOW + 1, max_value=2**64 - 1),
        refresh_token=st.none() | _any_text,
        validated_at=st.none() | _timestamps,
    )
)
def test_any_session_round_trips(session: Session) -> None:
    assert _PROPERTY_CODEC.decode(_PROPERTY_CODEC.encode(session)) == session


@given(
    st.one_of(
        st.text(),
        st.text(B64URL + "=+/ ", max_size=600),
        st.binary().map(lambda raw: raw.decode("latin-1")),
        st.binary().map(b64),
        st.binary(min_size=29).map(lambda raw: b64(b"\x01" + _PROPERTY_KEY_ID + raw)),
        st.integers(min_value=4097, max_value=50_000).map(lambda n: "A" * n),
    )
)
@example("")
@example(_PROPERTY_TOKEN[:-1])
def test_decode_never_raises(value: str) -> None:
    assert _PROPERTY_CODEC.decode(value) is None
    assert _PROPERTY_CODEC.decode_with_meta(value) is None
    assert _PROPERTY_CODEC.unseal(value, purpose=SESSION_PURPOSE) is None


@given(
    position=st.integers(min_value=0, max_value=len(_PROPERTY_TOKEN) - 1),
    replacement=st.one_of(st.sampled_from(B64URL), st.characters()),
)
def test_any_single_character_change_is_rejected(position: int, replacement: str) -> None:
    forged = _PROPERTY_TOKEN[:position] + replacement + _PROPERTY_TOKEN[position + 1 :]
    if forged == _PROPERTY_TOKEN:
        assert _PROPERTY_CODEC.decode(forged) == make_session()
    else:
        assert _PROPERTY_CODEC.decode(forged) is None


@given(
    position=st.integers(min_value=0, max_value=len(unb64(_PROPERTY_TOKEN)) - 1),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_is_rejected(position: int, mask: int) -> None:
    forged = bytearray(unb64(_PROPERTY_TOKEN))
    forged[position] ^= mask
    assert _PROPERTY_CODEC.decode(b64(bytes(forged))) is None
