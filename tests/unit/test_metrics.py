"""``/_gateway/metrics``: the counters in this process, their rendering and their slots.
Counts summed over forked workers, and the real ``serve`` with two workers, are
``tests/e2e/test_metrics.py``."""

from __future__ import annotations

import re

from gateway.server.metrics import COUNTERS, Metrics

_LINE = re.compile(r'^wechat_gateway_(\w+)\{(\w+)="(\w+)"\} (\d+)$', re.MULTILINE)


def parse(text: str) -> dict[tuple[str, str], int]:
    return {(name, value): int(count) for name, _, value, count in _LINE.findall(text)}


def test_render_lists_every_counter_with_help_and_type() -> None:
    text = Metrics().render().decode()
    assert set(parse(text)) == {(name, value) for name, _, value in COUNTERS}
    for name in {name for name, _, _ in COUNTERS}:
        assert f"# HELP wechat_gateway_{name} " in text
        assert f"# TYPE wechat_gateway_{name} counter" in text


def test_a_replacement_worker_keeps_the_count_going() -> None:
    metrics = Metrics(slots=2)
    slot = metrics.assign_slot()
    metrics.use_slot(slot)
    metrics.inc("logins_total", "success")
    metrics.release_slot(slot)
    again = metrics.assign_slot()
    assert again == slot
    metrics.use_slot(again)
    metrics.inc("logins_total", "success")
    assert parse(metrics.render().decode())[("logins_total", "success")] == 2


def test_slots_are_never_handed_to_two_live_workers() -> None:
    metrics = Metrics(slots=3)
    assert sorted(metrics.assign_slot() for _ in range(3)) == [0, 1, 2]


def test_histograms_count_each_duration_in_its_bucket_summed_over_workers() -> None:
    metrics = Metrics(slots=2)
    for slot, seconds in ((0, 0.001), (1, 0.0011), (1, 100.0)):
        metrics.use_slot(slot)
        metrics.observe("request_duration_seconds", seconds)
    text = metrics.render().decode()
    name = "wechat_gateway_request_duration_seconds"
    assert f'{name}_bucket{{le="0.001"}} 1\n' in text  # le: at most, the bound included
    assert f'{name}_bucket{{le="0.0025"}} 2\n' in text
    assert f'{name}_bucket{{le="30.0"}} 2\n' in text
    assert f'{name}_bucket{{le="+Inf"}} 3\n' in text
    assert f"{name}_count 3\n" in text
    assert f"{name}_sum 100.0021" in text


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist() -> None:
    import json
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).parents[2] / "config" / "grafana-dashboard.json").read_text()
    )
    rendered = Metrics().render().decode()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"wechat_gateway_\w+", expr)}
    assert len(used) >= 10
    for name in used:
        assert f"\n{name}" in "\n" + rendered, name
