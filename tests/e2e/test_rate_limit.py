"""``login.rate_limit`` on a real gateway: sign-in starts and callbacks per client address,
429 with Retry-After beyond it (a page, or JSON for API calls), the address from
X-Forwarded-For only through a trusted proxy, and one count for replicas sharing a store.
The counters themselves are ``tests/e2e/test_ratelimit_stores.py``."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.raw_e2e import WeChat, send, start_gateway
from tests.helpers.upstreams import RawUpstream


def login(port: int, headers: list[tuple[str, str]] | None = None) -> int:
    return send(port, "/_gateway/login?rd=/", headers or []).status


def test_sign_in_starts_are_limited_per_client_address(
    tmp_path: Path, wechat_app: WeChat, raw: RawUpstream
) -> None:
    with start_gateway(
        tmp_path,
        wechat_app,
        raw.url,
        login={"rate_limit": "3/60s"},
        access={"trusted_proxies": ["127.0.0.1/32"]},
    ) as gw:
        client = [("X-Forwarded-For", "203.0.113.9")]
        assert [login(gw.port, client) for _ in range(3)] == [302, 302, 302]
        refused = send(gw.port, "/_gateway/login?rd=/", client)
        assert refused.status == 429
        retry_after = int(refused.value("Retry-After") or "0")
        assert 1 <= retry_after <= 60
        assert "text/html" in (refused.value("Content-Type") or "")
        api = send(gw.port, "/_gateway/login", [*client, ("Accept", "application/json")])
        assert api.status == 429 and api.value("Retry-After")
        assert api.json()["error"]
        # Another client behind the same trusted proxy has its own count.
        assert login(gw.port, [("X-Forwarded-For", "198.51.100.4")]) == 302
        # Callbacks have their own count, and the same answer beyond it.
        statuses = [
            send(gw.port, "/_gateway/callback?code=x&state=" + "s" * 32, client).status
            for _ in range(4)
        ]
        assert statuses[:3] == [400, 400, 400] and statuses[3] == 429
        assert "rate_limited" in send(gw.port, "/_gateway/metrics").text


def test_an_untrusted_peer_cannot_pick_its_address(
    tmp_path: Path, wechat_app: WeChat, raw: RawUpstream
) -> None:
    with start_gateway(tmp_path, wechat_app, raw.url, login={"rate_limit": "2/60s"}) as gw:
        statuses = [login(gw.port, [("X-Forwarded-For", f"192.0.2.{i}")]) for i in range(3)]
        assert statuses == [302, 302, 429]


def test_replicas_sharing_a_store_share_the_count(
    tmp_path: Path, wechat_app: WeChat, raw: RawUpstream
) -> None:
    state = {"url": f"sqlite://{tmp_path}/shared.db"}
    limit = {"rate_limit": "3/60s"}
    first = start_gateway(tmp_path, wechat_app, raw.url, state=state, login=limit)
    second = start_gateway(tmp_path, wechat_app, raw.url, state=state, login=limit)
    with first, second:
        statuses = [login(gw.port) for gw in (first, second, first, second)]
        assert statuses == [302, 302, 302, 429]


def test_zero_turns_it_off(tmp_path: Path, wechat_app: WeChat, raw: RawUpstream) -> None:
    with start_gateway(tmp_path, wechat_app, raw.url, login={"rate_limit": "0/1s"}) as gw:
        assert {login(gw.port) for _ in range(30)} == {302}
