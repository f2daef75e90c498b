"""Logs of a real gateway: every line JSON when asked, the request id from the client to the
app and back and in every line of the request, the audit trail (sign-in ok and failed,
sign-out, denied, revoke), and no secret, code, token or cookie value in any line at any
level. The formatters alone are ``tests/unit/test_logs.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.raw_e2e import RawBrowser, WeChat, send, start_gateway
from tests.helpers.support import APP_SECRET, SESSION_SECRET, GatewayProcess
from tests.helpers.upstreams import RawUpstream


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, raw: RawUpstream
) -> Iterator[GatewayProcess]:
    bob = wechat_app.openid("bob")
    with start_gateway(
        tmp_path_factory.mktemp("logs"),
        wechat_app,
        raw.url,
        server={"log_format": "json", "log_level": "debug", "workers": 2},
        upstreams=[
            {"prefix": "/admin/", "url": raw.url, "allow": [bob]},
            {"prefix": "/", "url": raw.url},
        ],
    ) as gateway:
        yield gateway


def lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    """Every line the gateway wrote, each parsed as the JSON object it must be."""
    parsed = []
    for line in gw.log().splitlines():
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(document, dict), line
        parsed.append(document)
    return parsed


def events(gw: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [d for d in lines(gw) if d.get("logger") == "gateway.audit" and d["event"] == event]


def wait_for(gw: GatewayProcess, predicate: Any, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = [d for d in lines(gw) if predicate(d)]
        if found:
            return found
        assert time.monotonic() < deadline, f"no log line: {what}"
        time.sleep(0.05)


def test_a_plain_request_id_goes_to_the_app_back_to_the_client_and_into_the_log(
    gw: GatewayProcess, wechat_app: WeChat
) -> None:
    browser = RawBrowser()
    assert wechat_app.sign_in(browser, f"{gw.url}/_gateway/login?rd=/", "alice").status == 302
    reply = browser.get(f"{gw.url}/page", [("X-Request-ID", "trace-42:a/b+c=")])
    assert reply.value("X-Request-ID") == "trace-42:a/b+c="
    assert reply.echo().values("X-Request-ID") == ["trace-42:a/b+c="]
    access = wait_for(gw, lambda d: d.get("request_id") == "trace-42:a/b+c=", "the access line")
    assert access[0]["logger"] == "access" and access[0]["status"] == 200


@pytest.mark.parametrize("incoming", [None, "has space", "x" * 129, "<script>"])
def test_any_other_request_id_is_replaced_by_a_fresh_one(
    gw: GatewayProcess, incoming: str | None
) -> None:
    headers = [("X-Request-ID", incoming)] if incoming is not None else []
    reply = send(gw.port, "/_gateway/healthz", headers)
    rid = reply.value("X-Request-ID")
    assert rid and rid != incoming and len(rid) == 24
    wait_for(gw, lambda d: d.get("request_id") == rid, "the healthz access line")


def test_every_answer_carries_a_request_id(gw: GatewayProcess) -> None:
    for target in ("/_gateway/nope", "/_gateway/login", "/page", "/%zz"):
        reply = send(gw.port, target)
        assert reply.value("X-Request-ID"), (target, reply.status)


def test_the_audit_trail(gw: GatewayProcess, wechat_app: WeChat, tmp_path: Path) -> None:
    alice = wechat_app.openid("alice")
    browser = RawBrowser()
    assert wechat_app.sign_in(browser, f"{gw.url}/_gateway/login?rd=/", "alice").status == 302
    signin = wait_for(
        gw, lambda d: d.get("event") == "signin" and d.get("openid") == alice, "signin ok"
    )[-1]
    assert signin["outcome"] == "ok" and signin["client"] == "127.0.0.1"
    assert signin["provider"] == "wechat" and signin["sid"] and "user_agent" in signin

    denied = browser.get(f"{gw.url}/admin/x", [("User-Agent", "audit-test/1")])
    assert denied.status == 403
    event = wait_for(gw, lambda d: d.get("event") == "denied", "denied")[-1]
    assert event["openid"] == alice and event["reason"] == "not_allowed"
    assert event["user_agent"] == "audit-test/1" and event["path"] == "/admin/x"

    bad = send(gw.port, "/_gateway/callback?code=c0de-not-logged&state=S" + "a" * 30)
    assert bad.status == 400
    failed = wait_for(
        gw,
        lambda d: d.get("event") == "signin" and d.get("outcome") == "failed",
        "signin failed",
    )[-1]
    assert failed["reason"] == "login_state_invalid"

    assert browser.get(f"{gw.url}/_gateway/logout").status == 200
    signout = wait_for(gw, lambda d: d.get("event") == "signout", "signout")[-1]
    assert signout["openid"] == alice and signout["everywhere"] is False

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "sessions",
            "revoke",
            "-c",
            str(gw.config_path),
            "--user",
            alice,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    revoke = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert [d["event"] for d in revoke] == ["revoke"]
    assert revoke[0]["user"] == alice and isinstance(revoke[0]["sessions"], int)


def test_no_secret_code_token_or_cookie_value_in_any_line(
    gw: GatewayProcess, wechat_app: WeChat
) -> None:
    browser = RawBrowser()
    for user in ("alice", "bob"):
        reply = wechat_app.sign_in(browser, f"{gw.url}/_gateway/login?rd=/x?code=mine", user)
        assert reply.status == 302
        browser.get(f"{gw.url}/page?access_token=t0k3n-in-query&state=st4te")
    state: Any = wechat_app.simulator._state  # what WeChat issued: codes and tokens
    secrets = [APP_SECRET, SESSION_SECRET, "t0k3n-in-query", "st4te", "c0de-not-logged"]
    secrets += [*state._codes, *state._access, *state._refresh]
    secrets += [cookie.value for cookie in browser.cookies if len(cookie.value) > 8]
    assert len(secrets) > 8
    text = gw.log()
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}...) is in the log"
    assert all(isinstance(d, dict) for d in lines(gw))
