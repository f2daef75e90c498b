"""Identity the app can verify, through real gateways: the assertion against the JWKS,
stored keys shared by replicas, groups (config and a live groups file), the app's own header
names, and forged client copies of all of them. The verification kit's snippets and the
assertion's rejections are ``tests/e2e/test_verifying_identity.py``; the parts one by one
``tests/unit/test_identity_assertion.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.helpers.raw_e2e import WeChat, send, start_gateway
from tests.helpers.support import GatewayProcess, session_cookie
from tests.helpers.upstreams import RawUpstream

ALICE = "oAlice000000000000000000001"
BOB = "oBob00000000000000000000001"
CAROL = "oCarol000000000000000000001"


APP_ID: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def app_id(wechat_app: WeChat) -> None:
    APP_ID[:] = [wechat_app.app.app_id]


def cookie(openid: str, unionid: str | None = None) -> tuple[str, str]:
    value = session_cookie(openid, unionid=unionid, app_id=APP_ID[0])
    return ("Cookie", f"wechat_gateway={value}")


def jwks_of(gw: GatewayProcess) -> jwt.PyJWKSet:
    reply = send(gw.port, "/_gateway/jwks.json")
    assert reply.status == 200
    return jwt.PyJWKSet.from_json(reply.body.decode())


def verified(gw: GatewayProcess, token: str, audience: str | None = None) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks_of(gw).keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256"], audience=audience or gw.url, issuer=gw.url
    )
    return claims


@pytest.fixture(scope="module")
def groups_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("groups") / "groups.yaml"
    path.write_text(f"ops: [{BOB}]\n")
    return path


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory,
    wechat_app: WeChat,
    raw: RawUpstream,
    groups_file: Path,
) -> Iterator[GatewayProcess]:
    with start_gateway(
        tmp_path_factory.mktemp("assertion"),
        wechat_app,
        raw.url,
        access={
            "groups": {"finance": [ALICE, CAROL], "ops": [ALICE]},
            "groups_file": str(groups_file),
            "public": ["/static/"],
        },
        upstreams=[
            {"prefix": "/ops/", "url": raw.url, "allow": ["group:ops"], "audience": "ops-app"},
            {
                "prefix": "/grafana/",
                "url": raw.url,
                "headers": {"X-WEBAUTH-USER": "{openid}", "X-WEBAUTH-GROUPS": "{groups}"},
            },
            {"prefix": "/", "url": raw.url, "timeout": 3},
        ],
    ) as gateway:
        yield gateway


def test_the_app_gets_an_assertion_it_can_verify_against_the_jwks(gw: GatewayProcess) -> None:
    seen = send(gw.port, "/home", [cookie(ALICE, "uAlice")]).echo()
    claims = verified(gw, seen.value("X-WeChat-Assertion") or "")
    assert claims["sub"] == claims["openid"] == ALICE
    assert claims["unionid"] == "uAlice"
    assert claims["groups"] == ["finance", "ops"]
    assert claims["provider"] == "wechat"
    assert claims["exp"] - claims["iat"] == 300
    assert seen.value("X-WeChat-Groups") == "finance,ops"


def test_an_upstreams_audience_is_in_its_assertions(gw: GatewayProcess) -> None:
    seen = send(gw.port, "/ops/x", [cookie(ALICE)]).echo()
    assert verified(gw, seen.value("X-WeChat-Assertion") or "", "ops-app")["aud"] == "ops-app"


def test_the_jwks_is_public_cacheable_and_the_same_at_both_paths(gw: GatewayProcess) -> None:
    first = send(gw.port, "/_gateway/jwks.json")
    second = send(gw.port, "/.well-known/jwks.json")
    assert first.status == second.status == 200
    assert first.body == second.body
    assert first.value("Content-Type") == "application/jwk-set+json"
    assert first.value("Cache-Control") == "public, max-age=300"
    keys = json.loads(first.body)["keys"]
    assert keys and all(k["kty"] == "EC" and k["crv"] == "P-256" and "d" not in k for k in keys)


def test_forged_assertions_and_groups_never_reach_the_app(gw: GatewayProcess) -> None:
    forged = [
        ("X-WeChat-Assertion", "forged.token.here"),
        ("x-wechat-assertion", "forged2"),
        ("X-WECHAT-GROUPS", "admin"),
        ("X-WeChat-Groups", "admin"),
        ("X-WEBAUTH-USER", "admin"),
        ("x-webauth-user", "admin2"),
        ("X-Webauth-Groups", "admin"),
    ]
    for path, headers in (
        ("/home", [cookie(BOB), *forged]),
        ("/static/x.js", forged),  # public, no session
        ("/grafana/api", [cookie(CAROL), *forged]),
        ("/grafana/public", forged),
    ):
        reply = send(gw.port, path, headers)
        if reply.status != 200:
            assert path.startswith("/grafana/public") and reply.status == 302
            continue
        seen = reply.echo()
        assert b"forged" not in seen.head and b"admin" not in seen.head, (path, seen.headers)
        assertions = seen.values("X-WeChat-Assertion")
        assert len(assertions) <= 1


def test_the_apps_own_header_names_are_filled_in(gw: GatewayProcess) -> None:
    seen = send(gw.port, "/grafana/d", [cookie(CAROL)]).echo()
    assert seen.values("X-WEBAUTH-USER") == [CAROL]
    assert seen.values("X-WEBAUTH-GROUPS") == ["finance"]
    elsewhere = send(gw.port, "/home", [cookie(CAROL)]).echo()
    assert elsewhere.values("X-WEBAUTH-USER") == []


def test_group_allow_lists_and_a_live_groups_file(gw: GatewayProcess, groups_file: Path) -> None:
    assert send(gw.port, "/ops/x", [cookie(ALICE)]).status == 200  # ops in the config
    assert send(gw.port, "/ops/x", [cookie(BOB)]).status == 200  # ops in the file
    assert send(gw.port, "/ops/x", [cookie(CAROL)]).status == 403
    groups_file.write_text(f"ops: [{CAROL}]\nreaders: [{BOB}]\n")
    deadline = time.monotonic() + 5
    while send(gw.port, "/ops/x", [cookie(CAROL)]).status != 200:
        assert time.monotonic() < deadline, "the groups file change was not seen"
        time.sleep(0.1)
    # Both workers have it within a second of each other; the open session of Bob changed.
    time.sleep(1.2)
    for _ in range(4):
        assert send(gw.port, "/ops/x", [cookie(BOB)]).status == 403
        assert send(gw.port, "/home", [cookie(BOB)]).echo().value("X-WeChat-Groups") == "readers"
    groups_file.write_text("ops: [broken\n")
    time.sleep(1.5)
    for _ in range(4):  # the last good version stays
        assert send(gw.port, "/ops/x", [cookie(CAROL)]).status == 200
    assert gw.log().count("not taken") >= 1


def test_replicas_sharing_a_store_sign_with_one_key_and_publish_it(
    tmp_path: Path, wechat_app: WeChat, raw: RawUpstream
) -> None:
    state = {"url": f"sqlite://{tmp_path}/shared.db"}
    first = start_gateway(tmp_path, wechat_app, raw.url, state=state)
    second = start_gateway(tmp_path, wechat_app, raw.url, state=state)
    with first, second:
        token_a = send(first.port, "/a", [cookie(ALICE)]).echo().value("X-WeChat-Assertion")
        token_b = send(second.port, "/b", [cookie(ALICE)]).echo().value("X-WeChat-Assertion")
        assert token_a and token_b
        kid = jwt.get_unverified_header(token_a)["kid"]
        assert jwt.get_unverified_header(token_b)["kid"] == kid
        assert (
            send(first.port, "/_gateway/jwks.json").body
            == send(second.port, "/_gateway/jwks.json").body
        )
        assert kid.encode() not in (tmp_path / "shared.db").read_bytes()


def write_key(path: Path, private: Any) -> str:
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def test_configured_key_files_sign_and_are_all_published(
    tmp_path: Path, wechat_app: WeChat, raw: RawUpstream
) -> None:
    signing = write_key(tmp_path / "new.pem", ec.generate_private_key(ec.SECP256R1()))
    retiring = write_key(tmp_path / "old.pem", ec.generate_private_key(ec.SECP256R1()))
    with start_gateway(
        tmp_path, wechat_app, raw.url, identity={"signing_keys": [signing, retiring]}
    ) as gw:
        published = [k.key_id for k in jwks_of(gw).keys]
        assert len(published) == 2
        token = send(gw.port, "/a", [cookie(ALICE)]).echo().value("X-WeChat-Assertion") or ""
        assert jwt.get_unverified_header(token)["kid"] == published[0]
        assert verified(gw, token)["openid"] == ALICE


def test_assertions_can_be_turned_off(tmp_path: Path, wechat_app: WeChat, raw: RawUpstream) -> None:
    with start_gateway(tmp_path, wechat_app, raw.url, identity={"assertion": False}) as gw:
        seen = send(gw.port, "/a", [cookie(ALICE), ("X-WeChat-Assertion", "forged")]).echo()
        assert seen.values("X-WeChat-Assertion") == []
        assert seen.value("X-WeChat-OpenID") == ALICE
        assert json.loads(send(gw.port, "/_gateway/jwks.json").body) == {"keys": []}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "file not found"),
        ("not a key", "not a PEM private key"),
        ("rsa", "EC P-256 key is needed"),
        ("p384", "P-256 (prime256v1) is needed"),
    ],
)
def test_check_config_names_a_bad_key_file(
    tmp_path: Path, wechat_app: WeChat, content: str | None, says: str
) -> None:
    path = tmp_path / "key.pem"
    if content == "rsa":
        write_key(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif content == "p384":
        write_key(path, ec.generate_private_key(ec.SECP384R1()))
    elif content is not None:
        path.write_text(content)
    gateway = start_gateway(
        tmp_path, wechat_app, "http://127.0.0.1:1", identity={"signing_keys": [str(path)]}
    )
    gateway.config_path.write_text(json.dumps(gateway.config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
        check=False,
    )
    assert result.returncode != 0
    assert "identity.signing_keys[0]" in result.stderr + result.stdout
    assert says in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
