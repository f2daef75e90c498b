"""Replicas, end to end: two ``wechat-gateway serve`` processes sharing one real Redis, behind
nginx round-robin with no sticky sessions. They must behave as one gateway: a sign-in
started on one completes on the other, a used state is refused everywhere, a duplicate
callback on the other replica is answered like the first, and a revocation is seen by
both within a second.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.nginx import Nginx
from tests.helpers.raw_e2e import RawBrowser, Reply, WeChat, send, send_url, start_gateway
from tests.helpers.redis_server import RedisServer
from tests.helpers.support import HTML_ACCEPT, GatewayProcess, free_port
from tests.helpers.upstreams import EchoUpstream

pytestmark = pytest.mark.slow

_SITE = """\
upstream gateways {{
    server 127.0.0.1:{first};
    server 127.0.0.1:{second};
    keepalive 8;
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://gateways;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
    }}
}}
"""


@dataclass
class Deployment:
    nginx: Nginx
    replicas: tuple[GatewayProcess, GatewayProcess]
    wechat: WeChat
    redis: RedisServer

    @property
    def url(self) -> str:
        return self.nginx.url

    def page(self, browser: RawBrowser, path: str = "/page") -> Reply:
        return browser.get(self.url + path, [("Accept", HTML_ACCEPT)])

    def sessions(self, *args: str) -> subprocess.CompletedProcess[str]:
        config = self.replicas[0].config_path
        return subprocess.run(
            [sys.executable, "-m", "gateway", "sessions", *args, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, wechat_app: WeChat, upstream: EchoUpstream
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("replicas")
    nginx_port, first, second = free_port(), free_port(), free_port()
    with RedisServer(tmp / "redis") as redis:
        common = {
            "public_url": f"http://127.0.0.1:{nginx_port}",
            "state": {"url": redis.url},
        }
        with (
            start_gateway(tmp, wechat_app, upstream.url, first, **common) as one,
            start_gateway(tmp, wechat_app, upstream.url, second, **common) as two,
        ):
            site = _SITE.format(first=first, second=second, port=nginx_port)
            (tmp / "nginx").mkdir()
            with Nginx(tmp / "nginx", site, nginx_port) as nginx:
                yield Deployment(nginx, (one, two), wechat_app, redis)


def _sign_in(deployment: Deployment, user: str) -> tuple[RawBrowser, str]:
    browser = RawBrowser()
    start = browser.get(deployment.url + "/_gateway/login?rd=/page")
    assert start.status == 302, start.text
    confirmed = send_url(start.location.split("#", 1)[0] + f"&sim_user={user}")
    callback = confirmed.location
    reply = browser.get(callback)
    assert reply.status == 302, reply.text
    return browser, callback


def test_sign_ins_cross_replicas(deployment: Deployment) -> None:
    # Round robin: over several sign-ins, starts and callbacks land on both replicas.
    for user in ("alice", "zhangsan", "bob"):
        browser, _ = _sign_in(deployment, user)
        assert all(deployment.page(browser).status == 200 for _ in range(4))
    # A sign-in started on one replica completed on the other (round robin, no stickiness).
    one, two = (replica.log() for replica in deployment.replicas)
    assert ("GET /_gateway/login" in one and "GET /_gateway/callback" in two) or (
        "GET /_gateway/login" in two and "GET /_gateway/callback" in one
    )


def test_a_used_state_is_refused_on_every_replica(deployment: Deployment) -> None:
    browser, callback = _sign_in(deployment, "alice")
    stranger = RawBrowser()
    for name, value in (("wechat_gateway_login", browser.value_of("wechat_gateway_login")),):
        stranger.set(name, value or "", "127.0.0.1")
    replays = [stranger.get(callback).status for _ in range(4)]
    assert set(replays) == {400}


def test_a_revocation_is_seen_by_both_replicas_within_a_second(deployment: Deployment) -> None:
    browser, _ = _sign_in(deployment, "zhangsan")
    assert deployment.page(browser).status == 200
    revoked = deployment.sessions("revoke", "--user", deployment.wechat.openid("zhangsan"))
    assert revoked.returncode == 0, revoked.stderr
    start = time.monotonic()
    while time.monotonic() - start < 3:
        if {deployment.page(browser).status for _ in range(8)} == {302}:
            break
        time.sleep(0.05)
    assert time.monotonic() - start < 1.0
    listed = deployment.sessions("list", "--json", "--user", deployment.wechat.openid("zhangsan"))
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"


def test_the_store_holds_nothing_usable(deployment: Deployment) -> None:
    browser, callback = _sign_in(deployment, "bob")
    cookie = browser.value_of("wechat_gateway") or ""
    assert cookie
    contents = deployment.redis.dump()
    assert cookie.encode() not in contents
    code = callback.split("code=", 1)[1].split("&", 1)[0]
    assert code.encode() not in contents


def test_a_duplicate_callback_on_the_other_replica_is_answered_like_the_first(
    deployment: Deployment,
) -> None:
    browser = RawBrowser()
    start = browser.get(deployment.url + "/_gateway/login?rd=/dup")
    confirmed = send_url(start.location.split("#", 1)[0] + "&sim_user=alice")
    path = "/_gateway/callback?" + confirmed.location.split("?", 1)[1]
    cookie = browser.cookie_header("127.0.0.1", "/_gateway/")
    exchanges = lambda: sum(  # noqa: E731
        1 for call in deployment.wechat.simulator.calls() if call.endpoint == "access_token"
    )
    before = exchanges()
    replies: list[Reply] = []

    def callback(replica: GatewayProcess) -> None:
        replies.append(send(replica.port, path, [("Cookie", cookie)]))

    threads = [threading.Thread(target=callback, args=(r,)) for r in deployment.replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [reply.status for reply in replies] == [302, 302]
    assert {reply.location for reply in replies} == {
        f"http://127.0.0.1:{deployment.nginx.port}/dup"
    }
    sessions = {(reply.set_cookie("wechat_gateway") or {}).get("value") for reply in replies}
    assert len(sessions) == 1 and None not in sessions
    assert exchanges() == before + 1


def test_redis_away_and_back_under_a_real_gateway(
    tmp_path: Path, wechat_app: WeChat, upstream: EchoUpstream
) -> None:
    """healthz stays up, readyz and sign-in say 503, sessions fail closed after
    max_staleness while public paths are served, and everything recovers by itself with
    the revocations made before the outage still in force."""
    with RedisServer(tmp_path / "redis") as redis:
        port = free_port()
        overrides = {
            "state": {"url": redis.url, "max_staleness": "2s"},
            "access": {"public": ["/public/"]},
        }
        with start_gateway(tmp_path, wechat_app, upstream.url, port, **overrides) as gateway:
            url = gateway.url
            kept, gone = RawBrowser(), RawBrowser()
            for browser, user in ((kept, "alice"), (gone, "bob")):
                start = browser.get(url + "/_gateway/login")
                confirmed = send_url(start.location.split("#", 1)[0] + f"&sim_user={user}")
                assert browser.get(confirmed.location).status == 302
            page = [("Accept", HTML_ACCEPT)]
            revoked = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "sessions",
                    "revoke",
                    "--user",
                    wechat_app.openid("bob"),
                    "-c",
                    str(gateway.config_path),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert revoked.returncode == 0, revoked.stderr
            time.sleep(1)
            assert gone.get(url + "/page", page).status == 302
            redis.stop()
            assert send(port, "/_gateway/healthz").status == 200
            ready = send(port, "/_gateway/readyz")
            assert ready.status == 503 and ready.json()["status"] == "unavailable"
            assert send(port, "/_gateway/login", page).status == 503
            seen = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                statuses = {kept.get(url + "/page", page).status for _ in range(4)}
                seen.append((round(time.monotonic() - deadline + 10, 1), sorted(statuses)))
                if statuses == {503}:
                    break
                time.sleep(0.2)
            assert statuses == {503}, seen  # fail closed
            assert RawBrowser().get(url + "/public/x", page).status == 200
            redis.start()
            deadline = time.monotonic() + 8
            while {kept.get(url + "/page", page).status for _ in range(4)} != {
                200
            } and time.monotonic() < deadline:
                time.sleep(0.2)
            assert send(port, "/_gateway/readyz").status == 200
            assert kept.get(url + "/page", page).status == 200
            assert gone.get(url + "/page", page).status == 302  # still revoked
            assert "Traceback" not in gateway.log()
