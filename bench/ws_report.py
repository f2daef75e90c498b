"""The WebSocket part of the report: its targets, and its section of ``docs/benchmarks.md``.

Reads only the saved results (``results["websocket"]`` of a ``bench/run.py`` run, or the
JSON ``bench/websocket.py`` saves alone), like ``report.py``.
"""

from __future__ import annotations

import statistics
from typing import Any

KIB = 1024
MIB = 1024 * 1024

# The targets.
TARGET_IDLE_BYTES = 64 * KIB
TARGET_ADDED_P99_US = 2000.0
TARGET_STREAM_VS_NGINX = 0.5

Results = dict[str, Any]


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def per_socket(record: dict[str, Any], key: str = "rss_open") -> float:
    """Bytes of RSS growth per open WebSocket in one idle round."""
    return float(record[key] - record["rss_before"]) / float(record["connections"])


def idle_worst(records: list[dict[str, Any]]) -> float:
    """The largest growth per WebSocket over the rounds, counted right after opening and
    after one echo on each (whichever is larger): the figure the target is held to."""
    return max(max(per_socket(r), per_socket(r, "rss_after_echo")) for r in records)


def stream_mb_s(records: list[dict[str, Any]]) -> float:
    return statistics.median(float(r["size"]) / 1e6 / float(r["seconds"]) for r in records)


def _kib(value: float) -> str:
    return f"{value / KIB:,.1f} KiB"


def _ms(micros: float) -> str:
    return f"{micros / 1000:.2f} ms"


def _labels(ws: Results) -> dict[str, str]:
    return {c["key"]: c["label"] for c in ws["contenders"]}


def targets(ws: Results) -> list[tuple[str, str, bool]]:
    """(target, measured, passed) for each WebSocket target the results allow."""
    rows: list[tuple[str, str, bool]] = []
    settings = ws["settings"]
    idle = ws.get("idle", {})
    if idle.get("gateway"):
        worst = idle_worst(idle["gateway"])
        nginx = f"; nginx {_kib(idle_worst(idle['nginx']))}" if idle.get("nginx") else ""
        rows.append(
            (
                f"gateway RSS per open WebSocket < {_kib(TARGET_IDLE_BYTES)} "
                f"({settings['idle_connections']:,} idle at once)",
                f"{_kib(worst)} (worst of {len(idle['gateway'])} rounds{nginx})",
                worst < TARGET_IDLE_BYTES,
            )
        )
    latency = ws.get("latency", {})
    if "gateway" in latency and "direct" in latency:
        gateway = percentile(latency["gateway"]["samples_us"], 99)
        direct = percentile(latency["direct"]["samples_us"], 99)
        added = gateway - direct
        per_round = sorted(
            g["p99_us"] - d["p99_us"]
            for g, d in zip(latency["gateway"]["rounds"], latency["direct"]["rounds"], strict=True)
        )
        nginx = ""
        if "nginx" in latency:
            nginx_added = percentile(latency["nginx"]["samples_us"], 99) - direct
            nginx = f"; nginx adds {_ms(nginx_added)}"
        rows.append(
            (
                f"gateway adds < {_ms(TARGET_ADDED_P99_US)} to the p99 echo round trip "
                f"({settings['latency_connections']:,} WebSockets open)",
                f"{_ms(added)} ({_ms(gateway)} vs {_ms(direct)} direct; rounds "
                f"{_ms(per_round[0])} to {_ms(per_round[-1])}{nginx})",
                added < TARGET_ADDED_P99_US,
            )
        )
    streams = ws.get("stream", {})
    if "gateway" in streams and "nginx" in streams:
        gateway_mb, nginx_mb = stream_mb_s(streams["gateway"]), stream_mb_s(streams["nginx"])
        ratios = sorted(
            (g["size"] / g["seconds"]) / (n["size"] / n["seconds"])
            for g, n in zip(streams["gateway"], streams["nginx"], strict=True)
        )
        spread = f"rounds {ratios[0]:.0%} to {ratios[-1]:.0%}" if len(ratios) > 1 else "1 round"
        rows.append(
            (
                f"one WebSocket stream through the gateway ≥ {TARGET_STREAM_VS_NGINX:.0%} of "
                "nginx's MB/s",
                f"{gateway_mb / nginx_mb:.0%} ({gateway_mb:,.0f} vs {nginx_mb:,.0f} MB/s; "
                f"{spread})",
                gateway_mb / nginx_mb >= TARGET_STREAM_VS_NGINX,
            )
        )
    return rows


def summary(ws: Results) -> list[str]:
    """A few lines for the console, after a run."""
    labels = _labels(ws)
    lines = []
    for key, records in ws.get("idle", {}).items():
        lines.append(
            f"idle:    {labels[key]:<21} {_kib(idle_worst(records))} per WebSocket (worst round)"
        )
    for key, data in ws.get("latency", {}).items():
        samples = data["samples_us"]
        lines.append(
            f"latency: {labels[key]:<21} p50 {_ms(percentile(samples, 50))}  "
            f"p99 {_ms(percentile(samples, 99))}  ({len(samples):,} echoes)"
        )
    for key, records in ws.get("stream", {}).items():
        lines.append(f"stream:  {labels[key]:<21} {stream_mb_s(records):,.0f} MB/s (median)")
    return lines


def markdown(ws: Results) -> list[str]:
    """The report's WebSocket section, as lines."""
    settings = ws["settings"]
    labels = _labels(ws)
    out: list[str] = []
    add = out.append
    add("## WebSocket\n")
    add(
        "`bench/websocket.py`, in the same run: each contender in front of the same WebSocket "
        "upstream (`bench/ws_upstream.py`, raw sockets on one asyncio loop), driven by a client "
        "on raw sockets that does a minimal handshake. Every handshake carries the session "
        "cookie, so the gateway makes its access decision on each; nginx authenticates "
        "nothing. Load average (1, 5, 15 min) when this part began: "
        f"{ws['load_average']['start']}; when it ended: {ws['load_average']['end']}.\n"
    )

    idle = ws.get("idle", {})
    if idle:
        count = settings["idle_connections"]
        add(f"### {count:,} idle WebSockets\n")
        add(
            f"{count:,} WebSockets opened at once (64 handshakes in flight) through a freshly "
            "started contender, after 20 opened and closed as a warm-up. RSS is the summed "
            "`VmRSS` of the contender's processes (master and workers) once it stops moving: "
            "before, with all of them open, and again after one 32-byte echo on each (which "
            f"proves every one alive). Per WebSocket = growth / {count:,}; the target takes "
            "the larger of the two, worst round. Kernel socket buffers are not in any "
            "process's RSS, for either contender.\n"
        )
        add(
            "| contender | round | opened in | RSS before → all open | per WebSocket | "
            "after one echo each | per WebSocket |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|")
        for key, records in idle.items():
            for i, r in enumerate(records, 1):
                add(
                    f"| {labels[key]} | {i} | {r['open_seconds']:.1f} s | "
                    f"{r['rss_before'] / MIB:,.1f} → {r['rss_open'] / MIB:,.1f} MiB | "
                    f"{_kib(per_socket(r))} | {r['rss_after_echo'] / MIB:,.1f} MiB | "
                    f"{_kib(per_socket(r, 'rss_after_echo'))} |"
                )
        add("")
        if "nginx" in idle:
            add(
                "nginx allocates its connection tables for `worker_connections` when a worker "
                "starts, so part of its cost per connection is in the *before* figure; the "
                "gateway allocates as connections come.\n"
            )

    latency = ws.get("latency", {})
    if latency:
        add("### Echo round trip\n")
        add(
            f"{settings['latency_connections']:,} WebSockets open through each contender at "
            f"once; one {settings['message_size']}-byte binary message at a time, each on the "
            "next open connection, timed at the client from before the send to the last byte "
            f"of the echo. {settings['latency_rounds']} rounds interleave the contenders; "
            "every connection echoed once before, not counted. Percentiles pool all rounds.\n"
        )
        add("| contender | echoes | p50 | p90 | p99 | p99.9 | added p99 | p99 per round |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        direct = latency.get("direct")
        direct_p99 = percentile(direct["samples_us"], 99) if direct else None
        for key, data in latency.items():
            samples = data["samples_us"]
            p99 = percentile(samples, 99)
            added = "" if direct_p99 is None or key == "direct" else _ms(p99 - direct_p99)
            rounds = [r["p99_us"] for r in data["rounds"]]
            add(
                f"| {labels[key]} | {len(samples):,} | {_ms(percentile(samples, 50))} | "
                f"{_ms(percentile(samples, 90))} | {_ms(p99)} | "
                f"{_ms(percentile(samples, 99.9))} | {added} | "
                f"{_ms(min(rounds))} to {_ms(max(rounds))} |"
            )
        add("")

    streams = ws.get("stream", {})
    if streams:
        size = settings["stream_size"]
        add("### One large stream\n")
        add(
            f"The upstream sends {size / MIB:,.0f} MiB in 1 MiB binary frames, then a close "
            "frame; the client reads into one 1 MiB buffer and counts bytes (the close frame "
            "must land exactly where the framing says). MB/s is 10⁶ payload bytes per second "
            f"from the upgrade request to the last byte, median of {settings['stream_rounds']} "
            "rounds (interleaved). RSS is the contender's processes', sampled every 50 ms; CPU "
            "is theirs during the stream.\n"
        )
        add("| contender | MB/s | rounds | RSS before → peak | CPU per GB |")
        add("|---|---:|---:|---:|---:|")
        for key, records in streams.items():
            values = sorted(r["size"] / 1e6 / r["seconds"] for r in records)
            last = records[-1]
            memory = cpu = ""
            if last["rss_baseline"]:
                memory = (
                    f"{last['rss_baseline'] / MIB:,.1f} → "
                    f"{max(r['rss_peak'] for r in records) / MIB:,.1f} MiB"
                )
                cpu_per_gb = statistics.median(
                    r["cpu_seconds"] / (r["size"] / 1e9) for r in records
                )
                cpu = f"{cpu_per_gb:.2f} s"
            add(
                f"| {labels[key]} | {stream_mb_s(records):,.0f} | "
                f"{' / '.join(f'{v:,.0f}' for v in values)} | {memory} | {cpu} |"
            )
        add("")

    add("What runs:\n")
    for contender in ws["contenders"]:
        add(f"- **{contender['label']}**: {contender['setup']}")
    add(
        "- **upstream**: `bench/ws_upstream.py`, one process, one asyncio loop on raw "
        "non-blocking sockets: `/echo` sends each frame back, `/stream/<n>` writes n bytes "
        "from one preallocated 1 MiB frame."
    )
    add(
        "- **open files**: the harness raises its soft limit to the hard one (and the hard "
        "one where it may) before starting anything, so the client, the upstream and the "
        f"contenders inherit it: {settings['open_files_limit']:,} here. The gateway raises "
        "its own soft limit at start as it always does."
    )
    add("")
    return out
