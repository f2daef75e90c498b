"""The verification kit of ``docs/verifying-identity.md``, run against real gateways.

The Python snippet is taken from the page itself (the first ``python`` block after the
``<!-- snippet:python`` marker), its three constants pointed at a gateway, and run on the
assertions an app behind that gateway really receives: users signed in through the WeChat
simulator, requests proxied by gunicorn to a ``RawUpstream`` that records them. It must
accept those and refuse every forgery: a changed payload, another key's signature, the
wrong audience or issuer, an expired token, ``alg: none``, HS256 keyed with the public key.
The Node and Go snippets get the same cases when ``node`` / ``go`` are installed.

Two gateways:

- ``gw``: keys generated in the state store (the default), groups, a second upstream with
  its own ``audience``, a public path;
- ``gw_keys``: ``identity.signing_keys`` from PEM files this module wrote, so the tests hold
  the private keys and can sign tokens that are correct in every way but one; its WeChat
  app is not unionid-bound, so its users have no unionid.

The JWKS endpoints and the assertion's claims are checked here against the contract too,
with an RFC 7638 thumbprint computed independently of the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.session import SessionCodec
from gateway.simulator import SimApp, Simulator, SimulatorServer
from tests.helpers.raw_e2e import RawBrowser, WeChat, send, start_gateway
from tests.helpers.support import COOKIE, SESSION_SECRET, GatewayProcess
from tests.helpers.upstreams import RawUpstream, Seen

DOC = Path(__file__).resolve().parents[2] / "docs" / "verifying-identity.md"
ASSERTION = "X-WeChat-Assertion"
JWKS_PATHS = ("/_gateway/jwks.json", "/.well-known/jwks.json")
OTHER_AUDIENCE = "https://billing.internal"
#: A website app that is not unionid-bound: its users have no unionid.
UNBOUND_APP = SimApp("wx0a1b2c3d4e5f6a7b", "7c1d0e9f8a2b3c4d5e6f7a8b9c0d1e2f", "website", False)
EXPECTED_CLAIMS = {"iss", "aud", "sub", "openid", "app_id", "nickname", "groups", "sid"}
EXPECTED_CLAIMS |= {"provider", "iat", "exp"}

# --- the snippets, as the page shows them ---------------------------------------------------


def snippet(language: str, fence: str) -> str:
    """The first ``fence`` code block after the ``<!-- snippet:language`` marker."""
    text = DOC.read_text(encoding="utf-8")
    start = text.find(f"<!-- snippet:{language} ")
    assert start >= 0, f"{DOC.name} has no <!-- snippet:{language} ... --> marker"
    found = re.compile(rf"^```{fence}\n(.*?)^```$", re.M | re.S).search(text, start)
    assert found is not None, f"no ```{fence} block after the {language} marker"
    return found.group(1)


def configured(code: str, values: dict[str, str]) -> str:
    """``code`` with each constant ``NAME = "..."`` (Python, ``const`` in JS, a Go const
    block) set to the given value; each must be assigned exactly once."""
    for name, value in values.items():
        pattern = re.compile(rf'^(\s*(?:const\s+)?{name}\s*=\s*)"[^"\n]*"', re.M)
        literal = json.dumps(value)  # a string literal in Python, JavaScript and Go alike
        code, count = pattern.subn(lambda m: m.group(1) + literal, code)  # noqa: B023
        assert count == 1, f"{name} is assigned {count} times in the snippet"
    return code


@dataclass(frozen=True)
class Target:
    """What an app behind one gateway verifies against."""

    issuer: str
    audience: str
    jwks_url: str


Verify = Callable[[dict[str, str]], dict[str, Any] | None]


def python_verifier(target: Target) -> tuple[Verify, dict[str, Any]]:
    """The page's Python snippet, configured for ``target``: its ``wechat_identity`` and
    the namespace it ran in."""
    code = configured(
        snippet("python", "python"),
        {"ISSUER": target.issuer, "AUDIENCE": target.audience, "JWKS_URL": target.jwks_url},
    )
    namespace: dict[str, Any] = {"__name__": "verifying_identity_snippet"}
    exec(compile(code, f"{DOC}#python", "exec"), namespace)
    verify: Verify = namespace["wechat_identity"]
    return verify, namespace


# --- JOSE by hand, to forge with ------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload))


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, no whitespace."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode("ascii")).digest())


def jwk_of(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def public_key_of(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey:
    """The key a JWK names; ``ValueError`` unless it is a point on P-256."""
    x, y = unb64(jwk["x"]), unb64(jwk["y"])
    assert len(x) == len(y) == 32, jwk
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    )
    return numbers.public_key()


def es256(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{compact(header)}.{compact(claims)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def forgeries(token: str, jwks: dict[str, Any]) -> dict[str, str]:
    """Tokens made from a real assertion, by someone who does not hold the gateway's key."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header, claims = parts(token)
    kid = header["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    public_pem = public_key_of(jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    someone_else = {**claims, "sub": "oForgedOpenID00000000000001", "openid": "oForged0001"}
    attacker = ec.generate_private_key(ec.SECP256R1())
    none_header = {"alg": "none", "typ": "JWT", "kid": kid}
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    return {
        "tampered payload": f"{header_b64}.{compact(someone_else)}.{signature_b64}",
        "signature removed": f"{header_b64}.{payload_b64}.",
        "another key, the gateway's kid": es256(claims, attacker, kid),
        "another key, its own kid": es256(claims, attacker, thumbprint(jwk_of(attacker))),
        "alg none": f"{compact(none_header)}.{payload_b64}.",
        "alg none, signature kept": f"{compact(none_header)}.{payload_b64}.{signature_b64}",
        "HS256 keyed with the public key (PEM)": hs256(hs_header, claims, public_pem),
        "HS256 keyed with the public JWK": hs256(
            hs_header, claims, json.dumps(jwk, separators=(",", ":")).encode()
        ),
        "not a JWT": "not-a-jwt",
    }


def bad_claims(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    """Tokens signed with the gateway's own key, each wrong in one claim only."""
    now = int(time.time())

    def changed(**changes: Any) -> str:
        new = {**claims, **changes}
        return es256({k: v for k, v in new.items() if v is not None}, key, kid)

    return {
        "expired": changed(iat=now - 400, exp=now - 100),
        "wrong audience": changed(aud="https://another-app.example"),
        "audience list without ours": changed(aud=["https://another-app.example"]),
        "no audience": changed(aud=None),
        "wrong issuer": changed(iss="https://login.evil.example"),
        "issuer with a trailing slash": changed(iss=claims["iss"] + "/"),
        "no issuer": changed(iss=None),
        "no expiry": changed(exp=None),
    }


# --- the gateways, and what their app receives ----------------------------------------------


@pytest.fixture(scope="module")
def wechat() -> Iterator[SimulatorServer]:
    """The default simulator plus a website app that is not unionid-bound."""
    default = Simulator.default()
    with SimulatorServer(Simulator([*default.apps, UNBOUND_APP], default.users)) as server:
        yield server


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[GatewayProcess]:
    alice = (wechat_app.openid("alice"), wechat_app.unionid("alice"))
    groups = {
        "finance": [alice[0]],
        "财务 ops": [alice[1]],
        "bob-only": [wechat_app.openid("bob")],
    }
    upstreams = [
        {"prefix": "/billing/", "url": raw.url, "timeout": 3, "audience": OTHER_AUDIENCE},
        {"prefix": "/", "url": raw.url, "timeout": 3},
    ]
    tmp = tmp_path_factory.mktemp("verify-generated")
    access = {"groups": groups, "public": ["/public/"]}
    with start_gateway(tmp, wechat_app, raw.url, upstreams=upstreams, access=access) as gateway:
        yield gateway


@dataclass(frozen=True)
class OperatorKeys:
    """``identity.signing_keys``: the new key first (PKCS#8), the previous one (SEC1)."""

    new: ec.EllipticCurvePrivateKey
    previous: ec.EllipticCurvePrivateKey
    paths: tuple[str, str]


@pytest.fixture(scope="module")
def operator_keys(tmp_path_factory: pytest.TempPathFactory) -> OperatorKeys:
    tmp = tmp_path_factory.mktemp("signing-keys")
    new, previous = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    formats = {
        "new.pem": (new, serialization.PrivateFormat.PKCS8),
        "previous.pem": (previous, serialization.PrivateFormat.TraditionalOpenSSL),
    }
    for name, (key, form) in formats.items():
        pem = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
        (tmp / name).write_bytes(pem)
    assert b"BEGIN EC PRIVATE KEY" in (tmp / "previous.pem").read_bytes()  # SEC1
    return OperatorKeys(new, previous, (str(tmp / "new.pem"), str(tmp / "previous.pem")))


@pytest.fixture(scope="module")
def unbound_app(wechat: SimulatorServer) -> WeChat:
    app = WeChat(wechat)
    app.app = UNBOUND_APP
    return app


@pytest.fixture(scope="module")
def gw_keys(
    tmp_path_factory: pytest.TempPathFactory,
    unbound_app: WeChat,
    raw: RawUpstream,
    operator_keys: OperatorKeys,
) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("verify-operator-keys")
    identity = {"signing_keys": list(operator_keys.paths)}
    with start_gateway(tmp, unbound_app, raw.url, identity=identity) as gateway:
        yield gateway


@dataclass(frozen=True)
class Arrival:
    """One request as the app received it, from a user signed in through the simulator."""

    seen: Seen
    token: str
    session_sid: str
    received_at: float

    @property
    def claims(self) -> dict[str, Any]:
        return parts(self.token)[1]

    @property
    def header(self) -> dict[str, Any]:
        return parts(self.token)[0]


def signed_in(gateway: GatewayProcess, wechat: WeChat, user: str) -> RawBrowser:
    browser = RawBrowser()
    callback = wechat.sign_in(browser, f"{gateway.url}/_gateway/login?rd=/", user)
    assert callback.status == 302, (callback.status, callback.text[:300])
    assert browser.value_of(COOKIE) is not None
    return browser


def arrival(browser: RawBrowser, url: str) -> Arrival:
    received_at = time.time()
    seen = browser.get(url).echo()
    token = seen.value(ASSERTION)
    assert token, f"no {ASSERTION} reached the app: {seen.headers}"
    session = SessionCodec(SESSION_SECRET).decode(browser.value_of(COOKIE))
    assert session is not None
    return Arrival(seen, token, session.sid, received_at)


@pytest.fixture(scope="module")
def alice_browser(gw: GatewayProcess, wechat_app: WeChat) -> RawBrowser:
    return signed_in(gw, wechat_app, "alice")


@pytest.fixture(scope="module")
def alice(gw: GatewayProcess, alice_browser: RawBrowser) -> Arrival:
    return arrival(alice_browser, f"{gw.url}/app/page?x=1")


@pytest.fixture(scope="module")
def alice_billing(gw: GatewayProcess, alice_browser: RawBrowser) -> Arrival:
    return arrival(alice_browser, f"{gw.url}/billing/invoices")


@pytest.fixture(scope="module")
def alice_keys(gw_keys: GatewayProcess, unbound_app: WeChat) -> Arrival:
    return arrival(signed_in(gw_keys, unbound_app, "alice"), f"{gw_keys.url}/home")


def target_of(gateway: GatewayProcess, audience: str | None = None, path: str = "") -> Target:
    path = path or JWKS_PATHS[0]
    return Target(gateway.url, audience or gateway.url, gateway.url + path)


def jwks_of(gateway: GatewayProcess) -> dict[str, Any]:
    reply = send(gateway.port, JWKS_PATHS[0])
    assert reply.status == 200, reply.status
    document: dict[str, Any] = json.loads(reply.body)
    return document


@pytest.fixture(scope="module")
def verify(gw: GatewayProcess) -> Verify:
    return python_verifier(target_of(gw))[0]


@pytest.fixture(scope="module")
def verify_keys(gw_keys: GatewayProcess) -> Verify:
    return python_verifier(target_of(gw_keys, path=JWKS_PATHS[1]))[0]


def with_header(token: str) -> dict[str, str]:
    return {ASSERTION: token}


# --- the Python snippet ---------------------------------------------------------------------


def test_the_python_snippet_accepts_the_assertion_the_app_receives(
    gw: GatewayProcess, alice: Arrival, wechat_app: WeChat
) -> None:
    verify, namespace = python_verifier(target_of(gw))
    claims = verify(with_header(alice.token))
    assert claims is not None, "the page's snippet refused the gateway's own assertion"
    assert claims["sub"] == wechat_app.openid("alice")
    assert claims == alice.claims
    # The key set is cached, as the page says, and the per-key cache (never expiring) is off.
    client = namespace["jwks"]
    assert isinstance(client, jwt.PyJWKClient)
    assert client.jwk_set_cache is not None and client.jwk_set_cache.lifespan == 300
    assert client.jwk_set_cache.get() is not None  # filled by the verification above
    assert getattr(client.get_signing_key, "cache_info", None) is None


def test_the_python_snippet_refuses_a_request_without_an_assertion(verify: Verify) -> None:
    assert verify({}) is None
    assert verify(with_header("")) is None
    assert verify({"X-WeChat-OpenID": "oTrustMe"}) is None


@pytest.mark.parametrize(
    "name",
    [
        "tampered payload",
        "signature removed",
        "another key, the gateway's kid",
        "another key, its own kid",
        "alg none",
        "alg none, signature kept",
        "HS256 keyed with the public key (PEM)",
        "HS256 keyed with the public JWK",
        "not a JWT",
    ],
)
def test_the_python_snippet_refuses_forgeries(
    name: str, gw: GatewayProcess, alice: Arrival, verify: Verify
) -> None:
    forged = forgeries(alice.token, jwks_of(gw))[name]
    assert verify(with_header(alice.token)) is not None  # the same verifier takes the real one
    assert verify(with_header(forged)) is None, f"{name} was accepted"


@pytest.mark.parametrize(
    "name",
    [
        "expired",
        "wrong audience",
        "audience list without ours",
        "no audience",
        "wrong issuer",
        "issuer with a trailing slash",
        "no issuer",
        "no expiry",
    ],
)
def test_the_python_snippet_checks_every_claim_of_a_validly_signed_token(
    name: str, alice_keys: Arrival, operator_keys: OperatorKeys, verify_keys: Verify
) -> None:
    """Signed with the gateway's real signing key, so only the claim can be at fault."""
    kid = alice_keys.header["kid"]
    resigned = es256(alice_keys.claims, operator_keys.new, kid)
    assert verify_keys(with_header(resigned)) is not None  # re-signing alone changes nothing
    forged = bad_claims(alice_keys.claims, operator_keys.new, kid)[name]
    assert verify_keys(with_header(forged)) is None, f"{name} was accepted"


def test_a_key_still_published_verifies_and_the_wrong_kid_does_not(
    alice_keys: Arrival, operator_keys: OperatorKeys, verify_keys: Verify
) -> None:
    """Rotation with ``identity.signing_keys``: assertions of the previous key, listed
    second, still verify; a signature checked against another published key does not."""
    previous_kid = thumbprint(jwk_of(operator_keys.previous))
    by_previous = es256(alice_keys.claims, operator_keys.previous, previous_kid)
    assert verify_keys(with_header(by_previous)) is not None
    mislabelled = es256(alice_keys.claims, operator_keys.previous, alice_keys.header["kid"])
    assert verify_keys(with_header(mislabelled)) is None


def test_each_upstream_gets_its_own_audience(
    gw: GatewayProcess, alice: Arrival, alice_billing: Arrival, verify: Verify
) -> None:
    """A real assertion, signed by the gateway, made for another app is refused."""
    verify_billing = python_verifier(target_of(gw, audience=OTHER_AUDIENCE))[0]
    assert alice_billing.claims["aud"] == OTHER_AUDIENCE
    assert alice.claims["aud"] == gw.url
    assert verify_billing(with_header(alice_billing.token)) is not None
    assert verify(with_header(alice_billing.token)) is None
    assert verify_billing(with_header(alice.token)) is None


def test_forward_auth_answers_carry_an_assertion_for_public_url(
    gw: GatewayProcess, alice_browser: RawBrowser, wechat_app: WeChat, verify: Verify
) -> None:
    """The page tells forward-auth users to pass the answer's assertion on to the app."""
    answer = alice_browser.get(f"{gw.url}/_gateway/auth")
    assert answer.status == 200, (answer.status, answer.text[:200])
    token = answer.value(ASSERTION)
    assert token, answer.headers
    claims = verify(with_header(token))
    assert claims is not None
    assert claims["aud"] == gw.url and claims["sub"] == wechat_app.openid("alice")


# --- the assertion against the contract -----------------------------------------------------


def test_the_assertion_has_exactly_the_contracts_claims(
    gw: GatewayProcess, alice: Arrival, wechat_app: WeChat
) -> None:
    header, claims = alice.header, alice.claims
    assert header == {"alg": "ES256", "typ": "JWT", "kid": header["kid"]}
    assert header["kid"] in {thumbprint(key) for key in jwks_of(gw)["keys"]}
    # The session's first request: signed for it, not an older assertion reused.
    assert alice.received_at - 2 <= claims["iat"] <= time.time(), (claims, alice.received_at)
    assert alice.session_sid, "a real sign-in has a session id"
    assert claims == {
        "iss": gw.url,
        "aud": gw.url,
        "sub": wechat_app.openid("alice"),
        "openid": wechat_app.openid("alice"),
        "app_id": wechat_app.app.app_id,
        "unionid": wechat_app.unionid("alice"),
        "nickname": "Alice",
        "groups": ["finance", "财务 ops"],  # "财务 ops" by unionid; sorted; not "bob-only"
        "sid": alice.session_sid,
        "provider": "wechat",
        "iat": claims["iat"],
        "exp": claims["iat"] + 300,
    }
    assert not gw.url.endswith("/")
    # "sid" is the id `sessions list` shows and `sessions revoke --sid` takes.
    listing = subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", "list", "--json", "-c", str(gw.config_path)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    sids = {row["sid"]: row["openid"] for row in json.loads(listing.stdout)}
    assert sids.get(claims["sid"]) == claims["openid"], sids
    # The header says the same, percent-encoded, in the same order.
    assert alice.seen.value("X-WeChat-Groups") == "finance,%E8%B4%A2%E5%8A%A1%20ops"
    assert alice.seen.value("X-WeChat-OpenID") == claims["sub"]


@pytest.mark.parametrize(
    ("user", "nickname"),
    [
        ("zhangsan", "张三🚀"),  # WeChat sends "张三\x14🚀"
        ("bob", 'Bob "\\o/"X-WeChat-OpenID: forged'),  # sent with CR LF before "X-"
    ],
)
def test_the_nickname_claim_is_raw_utf8_without_control_characters(
    user: str, nickname: str, gw: GatewayProcess, wechat_app: WeChat, verify: Verify
) -> None:
    came = arrival(signed_in(gw, wechat_app, user), f"{gw.url}/profile")
    claims = verify(with_header(came.token))
    assert claims is not None
    assert claims["nickname"] == nickname
    assert claims["sub"] == claims["openid"] == wechat_app.openid(user)
    expected_groups = ["bob-only"] if user == "bob" else []
    assert claims["groups"] == expected_groups
    if not expected_groups:
        assert came.seen.value("X-WeChat-Groups") is None
    assert set(claims) == EXPECTED_CLAIMS | {"unionid"}


def test_no_unionid_claim_when_the_user_has_none(
    gw_keys: GatewayProcess,
    alice_keys: Arrival,
    unbound_app: WeChat,
    operator_keys: OperatorKeys,
    verify_keys: Verify,
) -> None:
    claims = verify_keys(with_header(alice_keys.token))
    assert claims is not None
    assert set(claims) == EXPECTED_CLAIMS, "unionid must be absent, not null or empty"
    assert claims["sub"] == unbound_app.openid("alice")
    assert claims["app_id"] == UNBOUND_APP.app_id
    assert claims["groups"] == []
    assert claims["iss"] == claims["aud"] == gw_keys.url
    assert alice_keys.seen.value("X-WeChat-UnionID") is None
    # identity.signing_keys: the first file signs.
    assert alice_keys.header["kid"] == thumbprint(jwk_of(operator_keys.new))


def test_client_copies_of_the_assertion_never_reach_the_app(
    gw: GatewayProcess, alice: Arrival, alice_browser: RawBrowser, verify: Verify
) -> None:
    forged = forgeries(alice.token, jwks_of(gw))["another key, the gateway's kid"]
    for spelling in (ASSERTION, "x-wechat-assertion", "X_WeChat_Assertion"):
        anonymous = send(gw.port, "/public/page", [(spelling, forged)]).echo()
        assert anonymous.values(ASSERTION) == [], spelling
        signed = alice_browser.get(f"{gw.url}/app/again", [(spelling, forged)]).echo()
        [token] = signed.values(ASSERTION)
        assert token != forged
        assert verify(with_header(token)) is not None


# --- the JWKS -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["gw", "gw_keys"])
def test_the_jwks_endpoints(which: str, request: pytest.FixtureRequest) -> None:
    gateway: GatewayProcess = request.getfixturevalue(which)
    replies = [send(gateway.port, path) for path in JWKS_PATHS]  # no session, no cookie
    for reply in replies:
        assert reply.status == 200, (reply.status, reply.text[:200])
        assert reply.value("Content-Type") == "application/jwk-set+json"
        assert reply.value("Cache-Control") == "public, max-age=300"
        assert reply.value("Set-Cookie") is None
    assert replies[0].body == replies[1].body, "the two paths must serve the same document"
    head = send(gateway.port, JWKS_PATHS[1], method="HEAD")
    assert head.status == 200 and head.body == b""
    document = json.loads(replies[0].body)
    assert set(document) == {"keys"}
    keys = document["keys"]
    for key in keys:
        # Public members only: never "d".
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}, key
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
        public_key_of(key)  # a point on P-256, or ValueError
        assert key["kid"] == thumbprint(key)
        jwt.PyJWK(key)  # what a verifier does with it
    assert len({key["kid"] for key in keys}) == len(keys)
    if which == "gw_keys":
        keys_of: OperatorKeys = request.getfixturevalue("operator_keys")
        expected = [thumbprint(jwk_of(keys_of.new)), thumbprint(jwk_of(keys_of.previous))]
        assert [key["kid"] for key in keys] == expected  # in the configured order
    else:
        # Generated: this week's and next week's (and last week's, once there was one).
        assert 2 <= len(keys) <= 3, keys
        signing = request.getfixturevalue("alice").header["kid"]
        assert signing in [key["kid"] for key in keys]


def test_the_jwks_answers_on_an_internal_address(gw: GatewayProcess) -> None:
    """The page tells apps to fetch the JWKS from the gateway's internal address: that
    request names another Host than ``public_url``'s."""
    public = send(gw.port, JWKS_PATHS[0])
    for host in ("wechat-gateway:8000", "wechat-gateway.default.svc.cluster.local"):
        internal = send(gw.port, JWKS_PATHS[0], host=host)
        assert internal.status == 200, (host, internal.status, internal.text[:200])
        assert internal.body == public.body


# --- the Node and Go snippets ---------------------------------------------------------------


def cases(gw: GatewayProcess, alice: Arrival) -> dict[str, str]:
    """Tokens for an app behind ``gw`` with the default audience: name -> token; "" is
    a request without the header."""
    return {"real": alice.token, "no header": "", **forgeries(alice.token, jwks_of(gw))}


def cases_keys(alice_keys: Arrival, operator_keys: OperatorKeys) -> dict[str, str]:
    kid = alice_keys.header["kid"]
    previous_kid = thumbprint(jwk_of(operator_keys.previous))
    return {
        "real": alice_keys.token,
        "previous key, still published": es256(
            alice_keys.claims, operator_keys.previous, previous_kid
        ),
        **bad_claims(alice_keys.claims, operator_keys.new, kid),
    }


ACCEPTED = {"real", "previous key, still published"}
Runner = Callable[[Target, list[str]], list[dict[str, Any] | None]]


def check_runner(
    run: Runner,
    gw: GatewayProcess,
    alice: Arrival,
    gw_keys: GatewayProcess,
    alice_keys: Arrival,
    operator_keys: OperatorKeys,
) -> None:
    for target, named in (
        (target_of(gw), cases(gw, alice)),
        (target_of(gw_keys, path=JWKS_PATHS[1]), cases_keys(alice_keys, operator_keys)),
    ):
        results = dict(zip(named, run(target, list(named.values())), strict=True))
        accepted = {name for name, claims in results.items() if claims is not None}
        assert accepted == ACCEPTED & set(named), results
        assert results["real"] == parts(named["real"])[1]


NODE_RUNNER = """\
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const { wechatIdentity } = await import(pathToFileURL(process.argv[2]).href);
const results = [];
for (const token of JSON.parse(readFileSync(0, "utf8"))) {
  results.push(await wechatIdentity(token ? { "x-wechat-assertion": token } : {}));
}
process.stdout.write(JSON.stringify(results));
"""


@pytest.fixture(scope="module")
def node_runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the Node snippet is not run")
    tmp = tmp_path_factory.mktemp("node-snippet")
    (tmp / "package.json").write_text('{"private": true, "type": "module"}\n')
    try:
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "jose"],
            cwd=tmp,
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm install jose took over 120 s: the Node snippet is not run")
    if installed.returncode != 0:
        reason = installed.stderr.decode(errors="replace")[-300:]
        pytest.skip(f"npm install jose failed, the Node snippet is not run: {reason}")
    (tmp / "runner.mjs").write_text(NODE_RUNNER)
    code = snippet("node", "js")

    def run(target: Target, tokens: list[str]) -> list[dict[str, Any] | None]:
        values = {"ISSUER": target.issuer, "AUDIENCE": target.audience}
        module = tmp / f"identity-{len(list(tmp.glob('identity-*')))}.mjs"
        module.write_text(configured(code, {**values, "JWKS_URL": target.jwks_url}))
        done = subprocess.run(
            [node, "runner.mjs", str(module)],
            cwd=tmp,
            input=json.dumps(tokens).encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        results: list[dict[str, Any] | None] = json.loads(done.stdout)
        return results

    return run


def test_the_node_snippet(
    node_runner: Runner,
    gw: GatewayProcess,
    alice: Arrival,
    gw_keys: GatewayProcess,
    alice_keys: Arrival,
    operator_keys: OperatorKeys,
) -> None:
    check_runner(node_runner, gw, alice, gw_keys, alice_keys, operator_keys)


GO_RUNNER = """\
package main

import (
	"encoding/json"
	"net/http"
	"os"
)

func main() {
	var tokens []string
	if err := json.NewDecoder(os.Stdin).Decode(&tokens); err != nil {
		panic(err)
	}
	results := []any{}
	for _, token := range tokens {
		r, _ := http.NewRequest("GET", "http://app.internal/", nil)
		if token != "" {
			r.Header.Set("X-WeChat-Assertion", token)
		}
		claims, err := WeChatIdentity(r)
		if err != nil {
			results = append(results, nil)
		} else {
			results = append(results, claims)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def go_runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not on PATH: the Go snippet is not run")
    code = snippet("go", "go")
    assert re.search(r"^package \w+$", code, re.M), "the Go snippet names no package"
    code = re.sub(r"^package \w+$", "package main", code, count=1, flags=re.M)
    root = tmp_path_factory.mktemp("go-snippet")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}

    def build(target: Target) -> Path:
        work = root / f"build-{len(list(root.glob('build-*')))}"
        work.mkdir()
        values = {"issuer": target.issuer, "audience": target.audience}
        (work / "identity.go").write_text(configured(code, {**values, "jwksURL": target.jwks_url}))
        (work / "main.go").write_text(GO_RUNNER)
        steps = [[go, "mod", "init", "snippet"], [go, "mod", "tidy"], [go, "build", "-o", "run"]]
        for step in steps:
            try:
                done = subprocess.run(
                    step, cwd=work, env=env, capture_output=True, timeout=300, check=False
                )
            except subprocess.TimeoutExpired:
                pytest.skip(f"{' '.join(step[1:])} took over 300 s: the Go snippet is not run")
            errors = done.stderr.decode(errors="replace")
            # A snippet that does not compile fails; modules that cannot be fetched, or need
            # a newer Go than this one, skip.
            if done.returncode != 0 and "identity.go" not in errors:
                pytest.skip(f"go {' '.join(step[1:])} failed, the Go snippet is not run: {errors}")
            assert done.returncode == 0, errors
        return work / "run"

    def run(target: Target, tokens: list[str]) -> list[dict[str, Any] | None]:
        done = subprocess.run(
            [str(build(target))],
            input=json.dumps(tokens).encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        results: list[dict[str, Any] | None] = json.loads(done.stdout)
        return results

    return run


def test_the_go_snippet(
    go_runner: Runner,
    gw: GatewayProcess,
    alice: Arrival,
    gw_keys: GatewayProcess,
    alice_keys: Arrival,
    operator_keys: OperatorKeys,
) -> None:
    check_runner(go_runner, gw, alice, gw_keys, alice_keys, operator_keys)
