"""``/_gateway/metrics``: counters in shared memory, summed over every worker.

Real processes are forked, as gunicorn does, to show that a worker's counts reach a
scrape made by another one; the real ``serve`` runs with two workers and counts what it was
sent over fresh connections. The counters within one process are
``tests/unit/test_metrics.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.server.metrics import Metrics
from tests.helpers.support import GatewayProcess, base_config, free_port, session_cookie
from tests.helpers.upstreams import EchoUpstream

_LINE = re.compile(r'^wechat_gateway_(\w+)\{(\w+)="(\w+)"\} (\d+)$', re.MULTILINE)


def parse(text: str) -> dict[tuple[str, str], int]:
    return {(name, value): int(count) for name, _, value, count in _LINE.findall(text)}


@pytest.mark.parametrize("threaded", [True, False])
def test_increments_of_forked_workers_are_summed(threaded: bool) -> None:
    metrics = Metrics(slots=4, threaded=threaded)
    children = []
    for increments in (3, 5):
        slot = metrics.assign_slot()
        pid = os.fork()
        if pid == 0:  # a worker: count into its own slot, then leave without cleanup
            metrics.use_slot(slot)
            for _ in range(increments):
                metrics.inc("requests_total", "proxied")
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    counts = parse(metrics.render().decode())
    assert counts[("requests_total", "proxied")] == 8
    assert counts[("requests_total", "public")] == 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with EchoUpstream() as upstream:
        port = free_port()
        config = base_config(
            port, upstream.url, access={"public": ["/public/"]}, server={"workers": 2}
        )
        directory = Path(tmp_path_factory.mktemp("metrics"))
        with GatewayProcess(config, directory) as process:
            yield process


def test_metrics_count_requests_across_workers(gateway: GatewayProcess) -> None:
    def scrape() -> dict[tuple[str, str], int]:
        reply = requests.get(gateway.url + "/_gateway/metrics", timeout=5)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(reply.text)

    before = scrape()
    cookie = {"wechat_gateway": session_cookie()}
    # Fresh connections each time, so that both workers take their share.
    for _ in range(10):
        assert requests.get(gateway.url + "/app", cookies=cookie, timeout=5).status_code == 200
        assert requests.get(gateway.url + "/public/x", timeout=5).status_code == 200
        browser = requests.get(
            gateway.url + "/app", allow_redirects=False, headers={"Accept": "text/html"}, timeout=5
        )
        assert browser.status_code == 302
        api = requests.get(gateway.url + "/app", headers={"Accept": "application/json"}, timeout=5)
        assert api.status_code == 401
    after = scrape()

    def grew(name: str, value: str) -> int:
        return after[(name, value)] - before[(name, value)]

    assert grew("requests_total", "proxied") == 10
    assert grew("requests_total", "public") == 10
    assert grew("requests_total", "login_redirect") == 10
    assert grew("requests_total", "unauthorized") == 10
    # The first scrape itself is a request to a gateway endpoint.
    assert grew("requests_total", "gateway_endpoint") == 1
    pids = set(re.findall(r"\[(\d+)\] \[INFO\] Booting worker", gateway.log()))
    assert len(pids) == 2


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, series
    return float(match.group(1))


def test_latency_histograms_and_open_gauges(gateway: GatewayProcess) -> None:
    before = requests.get(gateway.url + "/_gateway/metrics", timeout=5).text
    cookie = {"wechat_gateway": session_cookie()}
    for _ in range(5):
        assert requests.get(gateway.url + "/app", cookies=cookie, timeout=5).status_code == 200
    text = requests.get(gateway.url + "/_gateway/metrics", timeout=5).text
    for name in ("request_duration_seconds", "upstream_response_seconds"):
        metric = f"wechat_gateway_{name}"
        assert f"# TYPE {metric} histogram" in text
        grew = _value(text, f"{metric}_count") - _value(before, f"{metric}_count")
        assert grew >= 5, name
        assert _value(text, f'{metric}_bucket{{le="+Inf"}}') == _value(text, f"{metric}_count")
        buckets = re.findall(rf'^{metric}_bucket{{le="[^"]+"}} (\d+)$', text, re.MULTILINE)
        assert [int(b) for b in buckets] == sorted(int(b) for b in buckets)  # cumulative
        assert _value(text, f"{metric}_sum") > 0
    assert "# TYPE wechat_gateway_signin_duration_seconds histogram" in text
    # The scrape itself is in flight on an open connection while it is rendered.
    assert _value(text, "wechat_gateway_requests_in_flight") >= 1
    assert _value(text, "wechat_gateway_open_connections") >= 1


def test_metrics_are_only_for_the_allowed_networks(tmp_path: Path) -> None:
    with EchoUpstream() as upstream:
        port = free_port()
        config = base_config(port, upstream.url, server={"metrics_allow": ["10.0.0.0/8"]})
        with GatewayProcess(config, tmp_path) as process:
            denied = requests.get(process.url + "/_gateway/metrics", timeout=5)
            assert denied.status_code == 404
            assert "wechat_gateway_" not in denied.text
            assert requests.get(process.url + "/_gateway/healthz", timeout=5).status_code == 200
            # A forwarded address claiming to be allowed changes nothing.
            spoofed = requests.get(
                process.url + "/_gateway/metrics",
                headers={"X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3"},
                timeout=5,
            )
            assert spoofed.status_code == 404
