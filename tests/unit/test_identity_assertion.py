"""The verifiable identity: signing keys (files and stored), the assertion, groups and the
app's own header names. Through a live gateway: ``tests/e2e/test_assertion.py``."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.session import Session, SessionCodec
from gateway.identity.assertion import LIFETIME, REISSUE, AssertionSigner
from gateway.identity.compose import Identity
from gateway.identity.groups import Groups, member_key, parse_groups
from gateway.identity.keys import PERIOD, FileKeys, SigningKey, StoredKeys, load_key_file
from gateway.identity.templates import HeaderTemplates, check_header_name, parse_template
from gateway.state.sqlite import SqliteStore

SECRET = "s" * 40
ALICE = Session(
    openid="oAlice0000000000000000000001",
    app_id="wx0123456789abcdef",
    unionid="uAlice000000000000000000001",
    nickname="张三\x14🚀 <x>",
    avatar="https://thirdwx.qlogo.cn/a/132",
    issued_at=1_000,
    expires_at=10**10,
    sid="sid-alice",
)
BOB = Session(
    openid="oBob00000000000000000000001",
    app_id="wx0123456789abcdef",
    unionid=None,
    nickname="Bob",
    avatar="",
    issued_at=1_000,
    expires_at=10**10,
    sid="sid-bob",
)


def write_key(path: Path, key: Any, fmt: str = "pkcs8") -> str:
    if fmt == "public":
        data = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8
            if fmt in ("pkcs8", "encrypted")
            else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"pw")
            if fmt == "encrypted"
            else serialization.NoEncryption(),
        )
    path.write_bytes(data)
    return str(path)


# -- key files ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pkcs8", "sec1"])
def test_a_p256_key_file_in_either_format_loads(tmp_path: Path, fmt: str) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = load_key_file(write_key(tmp_path / "k.pem", private, fmt))
    assert key.jwk["crv"] == "P-256" and key.jwk["alg"] == "ES256"
    assert key.kid == SigningKey.of(private).kid


def test_the_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 7638 3.1 uses an RSA key; for EC the members are crv, kty, x, y, sorted.
    private = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey.of(private)
    jwk = jwt.PyJWK(key.jwk)
    assert jwk.key_id == key.kid
    members = {k: key.jwk[k] for k in ("crv", "kty", "x", "y")}
    expected = jwt.utils.base64url_encode(
        __import__("hashlib")
        .sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
        .digest()
    ).decode()
    assert key.kid == expected


@pytest.mark.parametrize(
    ("make", "fmt", "says"),
    [
        (None, "missing", "file not found"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "pkcs8", "P-256"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "pkcs8", "EC"),
        (ed25519.Ed25519PrivateKey.generate, "pkcs8", "EC"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "public", "private key is needed"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "encrypted", "encrypted"),
        (None, "garbage", "not a PEM private key"),
    ],
)
def test_a_bad_key_file_says_what_is_wrong(tmp_path: Path, make: Any, fmt: str, says: str) -> None:
    path = tmp_path / "k.pem"
    if fmt == "garbage":
        path.write_text("hello")
    elif make is not None:
        write_key(path, make(), fmt)
    with pytest.raises(ValueError, match=says):
        load_key_file(str(path))


def test_an_unreadable_key_file_says_so(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "k.pem"
    write_key(path, ec.generate_private_key(ec.SECP256R1()))
    path.chmod(0)
    with pytest.raises(ValueError, match="cannot be read"):
        load_key_file(str(path))


def test_file_keys_sign_with_the_first_and_publish_all(tmp_path: Path) -> None:
    first = ec.generate_private_key(ec.SECP256R1())
    second = ec.generate_private_key(ec.SECP256R1())
    keys = FileKeys([write_key(tmp_path / "a.pem", first), write_key(tmp_path / "b.pem", second)])
    assert keys.current().kid == SigningKey.of(first).kid
    published = [k["kid"] for k in json.loads(keys.jwks())["keys"]]
    assert published == [SigningKey.of(first).kid, SigningKey.of(second).kid]
    assert all("d" not in k for k in json.loads(keys.jwks())["keys"])  # never the private part


# -- stored keys -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    state = SqliteStore(tmp_path / "state.db", session_max_age=86400)
    yield state
    state.close()


def test_every_worker_of_every_replica_signs_with_the_same_stored_key(
    tmp_path: Path, store: Any
) -> None:
    now = [PERIOD * 100 + 5.0]
    other = SqliteStore(tmp_path / "state.db", session_max_age=86400)
    try:
        a = StoredKeys(store, SessionCodec(SECRET), clock=lambda: now[0])
        b = StoredKeys(other, SessionCodec(SECRET), clock=lambda: now[0])
        assert a.current().kid == b.current().kid
        assert a.jwks() == b.jwks()
    finally:
        other.close()


def test_stored_keys_rotate_weekly_published_a_week_ahead_and_a_week_after(store: Any) -> None:
    now = [PERIOD * 100 + 5.0]
    keys = StoredKeys(store, SessionCodec(SECRET), clock=lambda: now[0])
    first = keys.current().kid
    week1 = [k["kid"] for k in json.loads(keys.jwks())["keys"]]
    assert len(week1) == 2 and week1[0] == first  # this week's and next week's
    now[0] += PERIOD
    second = keys.current().kid
    week2 = [k["kid"] for k in json.loads(keys.jwks())["keys"]]
    assert second != first and second == week1[1]  # next week's key was published already
    assert week2[:2] == [first, second] and len(week2) == 3


def test_the_store_never_holds_a_usable_private_key(store: Any, tmp_path: Path) -> None:
    keys = StoredKeys(store, SessionCodec(SECRET), clock=lambda: PERIOD * 100.0)
    private = keys.current().private.private_numbers().private_value.to_bytes(32, "big")
    raw = (tmp_path / "state.db").read_bytes()
    wal = tmp_path / "state.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert private not in raw
    assert private.hex().encode() not in raw


def test_a_new_session_secret_starts_new_keys(store: Any) -> None:
    clock = lambda: PERIOD * 100.0  # noqa: E731
    old = StoredKeys(store, SessionCodec(SECRET), clock=clock).current().kid
    new = StoredKeys(store, SessionCodec("t" * 40), clock=clock).current().kid
    assert old != new


# -- the assertion ---------------------------------------------------------------------------


def signer(tmp_path: Path, now: list[float]) -> tuple[AssertionSigner, jwt.PyJWKSet]:
    private = ec.generate_private_key(ec.SECP256R1())
    keys = FileKeys([write_key(tmp_path / "k.pem", private)])
    return (
        AssertionSigner(keys, issuer="https://gw.example.com", clock=lambda: now[0]),
        jwt.PyJWKSet.from_json(keys.jwks().decode()),
    )


def verify(token: str, jwks: jwt.PyJWKSet, audience: str) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience=audience, issuer="https://gw.example.com"
    )
    return claims


def test_the_claims_are_the_contracts(tmp_path: Path) -> None:
    now = [time.time()]
    sign, jwks = signer(tmp_path, now)
    token = sign(ALICE, "https://gw.example.com", ("finance", "ops"))
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"]
    claims = verify(token, jwks, "https://gw.example.com")
    assert claims == {
        "iss": "https://gw.example.com",
        "aud": "https://gw.example.com",
        "sub": ALICE.openid,
        "openid": ALICE.openid,
        "app_id": ALICE.app_id,
        "unionid": ALICE.unionid,
        "nickname": "张三🚀 <x>",
        "groups": ["finance", "ops"],
        "sid": "sid-alice",
        "provider": "wechat",
        "iat": int(now[0]),
        "exp": int(now[0]) + LIFETIME,
    }
    bob = verify(sign(BOB, "grafana", ()), jwks, "grafana")
    assert "unionid" not in bob and bob["groups"] == [] and bob["aud"] == "grafana"


def test_an_assertion_is_reused_until_a_minute_before_it_expires(tmp_path: Path) -> None:
    now = [time.time()]
    sign, _ = signer(tmp_path, now)
    first = sign(ALICE, "a", ())
    now[0] += LIFETIME - REISSUE - 1
    assert sign(ALICE, "a", ()) == first
    assert sign(ALICE, "b", ()) != first  # another audience
    assert sign(ALICE, "a", ("ops",)) != first  # other groups
    now[0] += 1
    assert sign(ALICE, "a", ()) != first


# -- groups ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("oAlice0000000000000000000001", "oAlice0000000000000000000001"),
        ("wecom:ZhangSan", "wecom:zhangsan"),
        ("wecom-dept:007", "wecom-dept:7"),
    ],
)
def test_member_forms(entry: str, key: str) -> None:
    assert member_key(entry) == key


@pytest.mark.parametrize("entry", ["", "has space", "group:x", "wecom:", "wecom-dept:x", "a:b"])
def test_unknown_member_forms_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="openid or unionid"):
        member_key(entry)


def test_parse_groups_lists_every_problem() -> None:
    with pytest.raises(ValueError) as raised:
        parse_groups({"ok": ["oAlice0000000000000000000001"], "bad": ["x y", True], "": []}, "g")
    text = str(raised.value)
    assert "g.bad[0]" in text and "g.bad[1]" in text and "''" in text


def test_a_session_is_in_the_groups_of_its_openid_or_unionid() -> None:
    groups = Groups({"finance": [ALICE.openid], "ops": [ALICE.unionid or ""], "all": [BOB.openid]})
    assert groups.of(ALICE) == ("finance", "ops")
    assert groups.of(BOB) == ("all",)


def test_the_groups_file_is_followed_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text(f"ops: [{ALICE.openid}]\n")
    now = [0.0]
    groups = Groups({"finance": [BOB.openid]}, str(path), clock=lambda: now[0])
    assert groups.of(ALICE) == ("ops",)
    path.write_text(f"ops: [{BOB.openid}]\nfinance: [{ALICE.openid}]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert groups.of(ALICE) == ("ops",)  # checked at most once a second
    now[0] += 1
    assert groups.of(ALICE) == ("finance",)
    assert groups.of(BOB) == ("finance", "ops")
    caplog.set_level(logging.ERROR, "gateway.access")
    path.write_text("ops: [unclosed\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    for _ in range(3):
        now[0] += 1
        assert groups.of(ALICE) == ("finance",)
    assert len([r for r in caplog.records if "not taken" in r.message]) == 1
    path.write_text("ops: [not a member]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    now[0] += 1
    assert groups.of(BOB) == ("finance", "ops")
    assert len([r for r in caplog.records if "not taken" in r.message]) == 2
    path.unlink()
    now[0] += 1
    assert groups.of(BOB) == ("finance", "ops")


# -- the app's own header names --------------------------------------------------------------


def test_templates_fill_in_encoded_values() -> None:
    templates = HeaderTemplates(
        (
            ("X-WEBAUTH-USER", "{openid}"),
            ("X-WEBAUTH-NAME", "{nickname}"),
            ("X-Remote-User", "wechat-{unionid}"),
            ("X-Groups", "{groups}"),
            ("X-Corp", "{corp_id}|{userid}|{{literal}}"),
        )
    )
    rendered = dict(templates.render(ALICE, ("fin ance", "ops")))
    assert rendered == {
        "X-WEBAUTH-USER": ALICE.openid,
        "X-WEBAUTH-NAME": "%E5%BC%A0%E4%B8%89%F0%9F%9A%80%20%3Cx%3E",
        "X-Remote-User": f"wechat-{ALICE.unionid}",
        "X-Groups": "fin%20ance,ops",
        "X-Corp": "||{literal}",
    }
    assert dict(templates.render(BOB, ()))["X-Remote-User"] == "wechat-"
    assert templates.environ_keys == {
        "HTTP_X_WEBAUTH_USER",
        "HTTP_X_WEBAUTH_NAME",
        "HTTP_X_REMOTE_USER",
        "HTTP_X_GROUPS",
        "HTTP_X_CORP",
    }


@pytest.mark.parametrize(
    "template", ["{password}", "{openid!r}", "{openid:>10}", "{", "}", "a\nb", "{0}", "é{openid}"]
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        parse_template(template)


@pytest.mark.parametrize(
    "name",
    ["X-WeChat-User", "x_wechat_openid", "Host", "Content-Length", "Cookie", "Bad Name", "X:Y"],
)
def test_reserved_or_invalid_header_names_are_refused(name: str) -> None:
    assert check_header_name(name) is not None


# -- put together ----------------------------------------------------------------------------


def test_identity_adds_groups_templates_and_the_assertion(tmp_path: Path) -> None:
    now = [time.time()]
    sign, jwks = signer(tmp_path, now)
    identity = Identity(Groups({"ops": [ALICE.openid]}), sign, "https://gw.example.com")
    headers = identity.headers(ALICE, "app", HeaderTemplates((("X-User", "{openid}"),)))
    names = [name for name, _ in headers]
    assert names[:5] == [
        "X-WeChat-OpenID",
        "X-WeChat-AppID",
        "X-WeChat-UnionID",
        "X-WeChat-Nickname",
        "X-WeChat-Avatar",
    ]
    values = dict(headers)
    assert values["X-WeChat-Groups"] == "ops"
    assert values["X-User"] == ALICE.openid
    assert verify(values["X-WeChat-Assertion"], jwks, "app")["groups"] == ["ops"]
    plain = dict(Identity(Groups(), None, "https://gw.example.com").headers(BOB))
    assert "X-WeChat-Groups" not in plain and "X-WeChat-Assertion" not in plain


def test_keys_made_under_a_previous_secret_stay_published(store: Any) -> None:
    clock = lambda: PERIOD * 100.0  # noqa: E731
    old = StoredKeys(store, SessionCodec(SECRET), clock=clock).current().kid
    new_codec = SessionCodec("t" * 40, previous_secrets=[SECRET])
    rotated = StoredKeys(store, new_codec, clock=clock, previous=[SessionCodec(SECRET)])
    assert rotated.current().kid != old
    published = [k["kid"] for k in json.loads(rotated.jwks())["keys"]]
    assert rotated.current().kid in published and old in published
