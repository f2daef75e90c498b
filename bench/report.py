"""Turning a benchmark run (the JSON ``bench/run.py`` saves) into Markdown and an SVG chart.

Everything here reads the saved results only, so a report can be rebuilt from an old run
with ``python bench/run.py --report bench/results/<run>.json``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any
from xml.sax.saxutils import escape

import ws_report

MIB = 1024 * 1024

# The targets, as ratios within one run.
TARGET_VS_PROXY_MIDDLEWARE = 1.5
TARGET_VS_NO_HOP = 0.30
TARGET_RSS_GROWTH = 64 * MIB
# "Answers at once" while 120 requests are parked on the slow upstream.
TARGET_PROBE_SECONDS = 0.1
TARGET_REDIS_VS_EMBEDDED = 0.95
TARGET_REVOCATION_P99 = 1.0
# Issue 13: req/s with X-WeChat-Assertion on at least this share of assertions off.
TARGET_ASSERTION_ON_VS_OFF = 0.95
# Issue 14: req/s with server.log_format: json at least this share of the text format's.
TARGET_JSON_VS_TEXT = 0.95
# Rounds of one contender further apart than this (relative to their median): say so.
NOISY_SPREAD = 0.3

_COLOURS = ("#4e79a7", "#f28e2b")

Results = dict[str, Any]


def median_run(results: Results, key: str, connections: int) -> dict[str, float]:
    """Median req/s, p50 and p99 (each the median over the runs) for one contender."""
    runs = results["throughput"][key][str(connections)]
    return {
        "rps": statistics.median(run["requests"] / run["seconds"] for run in runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "errors": sum(sum(run["errors"].values()) for run in runs),
        "spread": _spread([run["requests"] / run["seconds"] for run in runs]),
    }


def _spread(values: list[float]) -> float:
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def _mb(value: float) -> str:
    return f"{value / MIB:,.1f} MiB"


#: (variant, the contender it is compared with, the least ratio of their req/s, the target's
#: wording): the gateway variants that differ from it in one setting.
VARIANTS = (
    (
        "gateway",
        "gateway_no_assertion",
        TARGET_ASSERTION_ON_VS_OFF,
        "gateway req/s with `X-WeChat-Assertion` on ≥ {:.0%} of assertions off",
    ),
    (
        "gateway_json",
        "gateway",
        TARGET_JSON_VS_TEXT,
        "gateway req/s with `log_format: json` ≥ {:.0%} of `text` (access log on)",
    ),
)


def variant_targets(results: Results) -> list[tuple[str, str, bool]]:
    """The targets on the gateway variants measured in this run (issues 13 and 14)."""
    rows: list[tuple[str, str, bool]] = []
    throughput = results["throughput"]
    for mine, theirs, least, wording in VARIANTS:
        if mine not in throughput or theirs not in throughput:
            continue
        for connections in results["settings"]["connections"]:
            a = median_run(results, mine, connections)["rps"]
            b = median_run(results, theirs, connections)["rps"]
            cpu_a, cpu_b = (
                median_cpu(results, mine, connections),
                median_cpu(results, theirs, connections),
            )
            # The two ran seconds apart in each round: their ratio there drifts less than
            # either's req/s from round to round, so the verdict is on its median.
            ratio = statistics.median(_ratios(results, mine, theirs, connections))
            rows.append(
                (
                    wording.format(least) + f" ({connections} connections)",
                    f"{ratio:.0%} (median of the rounds' ratios; "
                    f"{_round_ratios(results, theirs, connections, '{:.0%}', mine=mine)}; "
                    f"medians {a:,.0f} vs {b:,.0f} req/s, CPU {cpu_a:,.0f} vs {cpu_b:,.0f} µs/req)",
                    ratio >= least,
                )
            )
    return rows


def targets(results: Results) -> list[tuple[str, str, bool]]:
    """(target, measured, passed) for every target the issues set; for a run with ``--only``,
    those it measured."""
    if results.get("only"):
        return variant_targets(results)
    rows: list[tuple[str, str, bool]] = []
    for connections in results["settings"]["connections"]:
        gateway = median_run(results, "gateway", connections)["rps"]
        proxy = median_run(results, "proxy_middleware", connections)["rps"]
        hello = median_run(results, "no_hop", connections)["rps"]
        rows.append(
            (
                f"gateway req/s ≥ {TARGET_VS_PROXY_MIDDLEWARE:g}× ProxyMiddleware's "
                f"({connections} connections)",
                f"{gateway / proxy:.2f}× ({gateway:,.0f} vs {proxy:,.0f}; "
                f"{_round_ratios(results, 'proxy_middleware', connections, '{:.2f}×')})",
                gateway / proxy >= TARGET_VS_PROXY_MIDDLEWARE,
            )
        )
        rows.append(
            (
                f"gateway req/s ≥ {TARGET_VS_NO_HOP:.0%} of the no-hop hello-world's "
                f"({connections} connections)",
                f"{gateway / hello:.0%} ({gateway:,.0f} vs {hello:,.0f}; "
                f"{_round_ratios(results, 'no_hop', connections, '{:.0%}')})",
                gateway / hello >= TARGET_VS_NO_HOP,
            )
        )
    size = _size_label(results["settings"]["transfer_size"])
    for direction in ("download", "upload"):
        transfer = results["transfers"]["gateway"][direction]
        growth = transfer["rss_peak"] - transfer["rss_baseline"]
        rows.append(
            (
                f"gateway peak RSS grows < {_mb(TARGET_RSS_GROWTH)} during a {size} {direction}",
                f"+{_mb(growth)}",
                growth < TARGET_RSS_GROWTH,
            )
        )
    slow = results["slow"]["gateway"]
    settings = results["settings"]
    rows.append(
        (
            f"{settings['slow_requests']} requests parked on a {settings['slow_seconds']:g} s "
            f"upstream: a fast request answers within {TARGET_PROBE_SECONDS * 1000:.0f} ms",
            f"{slow['probe_seconds'] * 1000:.1f} ms (status {slow['probe_status']}, "
            f"{slow['in_flight_at_probe']} in flight)",
            slow["probe_status"] == 200 and slow["probe_seconds"] <= TARGET_PROBE_SECONDS,
        )
    )
    rows.append(
        (
            f"… and all {settings['slow_requests']} complete",
            f"{slow['succeeded']}/{slow['requests']} in {slow['all_done_seconds']:.2f} s",
            slow["succeeded"] == slow["requests"],
        )
    )
    if "gateway_redis" in results["throughput"]:
        for connections in settings["connections"]:
            embedded = median_run(results, "gateway", connections)["rps"]
            redis = median_run(results, "gateway_redis", connections)["rps"]
            rows.append(
                (
                    f"gateway with Redis state req/s ≥ {TARGET_REDIS_VS_EMBEDDED:.0%} of the "
                    f"embedded store's ({connections} connections)",
                    f"{redis / embedded:.0%} ({redis:,.0f} vs {embedded:,.0f})",
                    redis / embedded >= TARGET_REDIS_VS_EMBEDDED,
                )
            )
    latencies = results.get("revocation_seconds")
    if latencies:
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        rows.append(
            (
                f"a revocation takes effect on another replica: p99 < "
                f"{TARGET_REVOCATION_P99 * 1000:.0f} ms ({len(latencies)} revocations)",
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
                p99 < TARGET_REVOCATION_P99,
            )
        )
    rows += variant_targets(results)
    if "websocket" in results:
        rows += ws_report.targets(results["websocket"])
    return rows


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def median_cpu(results: Results, key: str, connections: int) -> float:
    runs = results["throughput"][key][str(connections)]
    return float(statistics.median(run["cpu_us_per_request"] for run in runs))


def cpu_summary(results: Results) -> str:
    """The req/s targets seen through CPU time per request, which contention disturbs less."""
    parts = []
    for connections in results["settings"]["connections"]:
        gateway = median_cpu(results, "gateway", connections)
        proxy = median_cpu(results, "proxy_middleware", connections)
        hello = median_cpu(results, "no_hop", connections)
        parts.append(
            f"at {connections} connections the gateway's processes spent {gateway:,.0f} µs "
            f"of CPU per request, ProxyMiddleware's {proxy:,.0f} µs "
            f"({proxy / gateway:.2f}× the gateway's) and the hello-world's {hello:,.0f} µs"
        )
    return (
        "Seen through CPU time per request (below), which other load on the machine "
        "disturbs less than req/s: " + "; ".join(parts) + "."
    )


def hop_bound(results: Results) -> str:
    """Why the no-hop ratio is what it is: on one machine, every request through the gateway
    costs the gateway's CPU *and* the upstream's, while the no-hop run pays the upstream only."""
    parts = []
    for connections in results["settings"]["connections"]:
        runs = results["throughput"]["gateway"][str(connections)]
        upstream = statistics.median(run["upstream_cpu_us_per_request"] for run in runs)
        gateway = median_cpu(results, "gateway", connections)
        hello = median_cpu(results, "no_hop", connections)
        parts.append(
            f"at {connections} connections {hello:,.0f} / ({gateway:,.0f} + {upstream:,.0f})"
            f" = {hello / (gateway + upstream):.0%}"
        )
    return (
        "**The no-hop ratio on one machine.** Client, gateway and upstream share the same "
        "CPUs, so a request through the gateway costs the gateway's CPU plus the upstream's "
        "(which parses the forwarded and identity headers the gateway adds), while a no-hop "
        "request costs the upstream's alone. CPU-bound, the ratio is roughly "
        "hello-world CPU / (gateway CPU + upstream CPU behind it), the client's own share "
        "aside: "
        + "; ".join(parts)
        + ". Much of the gateway's own CPU per request is gunicorn and gevent doing what "
        "they also do for the hello-world (parse the request, build the environ, write the "
        "response, schedule greenlets); the rest is the second hop (one send, one receive, "
        "the upstream response parsed), the session and identity headers, and the access "
        "log line."
    )


def worker_note(results: Results) -> str:
    """The reference row: how much of the gateway's speed is its worker class."""
    if "no_hop_gateway_worker" not in results["throughput"]:
        return ""
    parts = []
    for connections in results["settings"]["connections"]:
        stock = median_run(results, "no_hop", connections)["rps"]
        own = median_run(results, "no_hop_gateway_worker", connections)["rps"]
        gateway = median_run(results, "gateway", connections)["rps"]
        parts.append(
            f"at {connections} connections the hello-world answers {own:,.0f} req/s on the "
            f"gateway's worker against {stock:,.0f} on gunicorn's ({own / stock:.2f}×), and "
            f"the gateway's req/s are {gateway / own:.0%} of the former"
        )
    return (
        "**The gateway's worker.** The gateway runs on its own gevent worker class, "
        "`gateway.server.worker.GatewayWorker`: gunicorn's, except that a response head leaves "
        "with the first body piece in one write (one system call and one wake-up of the "
        "client instead of two) and less is recomputed per request. Any app gains from "
        "that, so the reference row puts the hello-world itself on this worker: "
        + "; ".join(parts)
        + ". The targets compare the gateway with the upstream as it is deployed, on "
        "gunicorn's stock worker; this row is there so that neither number hides the other."
    )


def _round_ratios(
    results: Results, other: str, connections: int, style: str, *, mine: str = "gateway"
) -> str:
    """``mine``'s ratio to ``other`` within each round, lowest to highest."""
    ratios = sorted(_ratios(results, mine, other, connections))
    if len(ratios) == 1:
        return "1 round"
    return f"rounds: {style.format(ratios[0])} to {style.format(ratios[-1])}"


def _ratios(results: Results, mine: str, other: str, connections: int) -> list[float]:
    """``mine``'s req/s over ``other``'s within each round, in round order."""
    ours = results["throughput"][mine][str(connections)]
    theirs = results["throughput"][other][str(connections)]
    return [
        (a["requests"] / a["seconds"]) / (b["requests"] / b["seconds"])
        for a, b in zip(ours, theirs, strict=True)
    ]


def _size_label(size: int) -> str:
    if size % (1024 * MIB) == 0:
        return f"{size // (1024 * MIB)} GiB"
    return f"{size / MIB:g} MiB"


def markdown(results: Results, chart_name: str) -> str:
    settings = results["settings"]
    contenders = results["contenders"]
    labels = {c["key"]: c["label"] for c in contenders}
    size = _size_label(settings["transfer_size"])
    out: list[str] = []
    add = out.append

    add("# Benchmarks\n")
    add(
        "Every contender below serves the same 1 KB answer from the same fast upstream, in one "
        f"run on one machine, measured side by side (generated {results['date']} by "
        f"`{results['command']}`). Absolute figures move between machines and runs; the "
        "targets are ratios within a run, so they are what to compare.\n"
    )
    spread = max(
        median_run(results, c["key"], n)["spread"]
        for c in contenders
        for n in settings["connections"]
    )
    if spread > NOISY_SPREAD:
        add(
            f"> **A noisy run.** A contender's fastest and slowest round differed by up to "
            f"{spread:.0%} of its median: something else was using the CPUs (see the load "
            "average under [Machine](#machine)). Read the req/s ratios with that in mind; "
            "CPU time per request, also reported, is much steadier under such load.\n"
        )

    rows = targets(results)
    passed = sum(ok for _, _, ok in rows)
    add("## Targets\n")
    add(f"{passed} of {len(rows)} targets met.\n")
    add("| target | measured | result |")
    add("|---|---|---|")
    for name, measured, ok in rows:
        add(f"| {name} | {measured} | {_verdict(ok)} |")
    add("")
    add(cpu_summary(results) + "\n")
    add(hop_bound(results) + "\n")
    note = worker_note(results)
    if note:
        add(note + "\n")

    add("## 1 KB GET\n")
    add(
        f"wrk, keep-alive, {settings['duration']:g} s per run; median of {settings['runs']} "
        "runs (contenders interleaved, so drift hits all alike). Latency in milliseconds. "
        "Every request carries the session cookie.\n"
    )
    header = "| contender |"
    rule = "|---|"
    for connections in settings["connections"]:
        header += f" req/s ({connections} conns) | p50 | p99 |"
        rule += "---:|---:|---:|"
    add(header)
    add(rule)
    notes: list[str] = []
    for contender in contenders:
        line = f"| {contender['label']} |"
        for connections in settings["connections"]:
            run = median_run(results, contender["key"], connections)
            line += f" {run['rps']:,.0f} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} |"
            if run["errors"]:
                notes.append(
                    f"{contender['label']}, {connections} connections: {run['errors']:,} "
                    "errors (socket errors or non-2xx/3xx) over all runs."
                )
        add(line)
    add("")
    for note in notes:
        add(f"- {note}")
    if notes:
        add("")
    add(
        f"Spread between the fastest and slowest run of a contender: at most "
        f"{spread:.0%} of its median.\n"
    )
    add(f"![req/s per contender]({chart_name})\n")

    add("### CPU time per request\n")
    add(
        "User plus system CPU time (from `/proc`) that a contender's own processes spent "
        "during a run, divided by the requests it served, and the same for the upstream "
        "behind it; median over the runs, in microseconds. On a machine shared with other "
        "load this is steadier than req/s, and it is what a proxy costs per request.\n"
    )
    header, rule = "| contender |", "|---|"
    for connections in settings["connections"]:
        header += f" own ({connections} conns) | upstream ({connections} conns) |"
        rule += "---:|---:|"
    add(header)
    add(rule)
    for contender in contenders:
        line = f"| {contender['label']} |"
        for connections in settings["connections"]:
            runs = results["throughput"][contender["key"]][str(connections)]
            own = statistics.median(run["cpu_us_per_request"] for run in runs)
            upstream = [run["upstream_cpu_us_per_request"] for run in runs]
            behind = (
                "(is the upstream)" if None in upstream else f"{statistics.median(upstream):,.0f}"
            )
            line += f" {own:,.0f} | {behind} |"
        add(line)
    add("")

    add(f"## {size} download and upload\n")
    add(
        "One client at a time, reading or writing in 1 MiB pieces; MB/s is 10⁶ bytes per "
        "second, measured at the client. RSS is the summed resident memory of the "
        "contender's processes (master and workers; pages shared after fork count once per "
        "process), sampled every 50 ms: before the transfer, its peak during it, and the "
        "growth. For the no-hop row it is the upstream's own processes.\n"
    )
    add(
        "| contender | download MB/s | RSS before → peak | growth | "
        "upload MB/s | RSS before → peak | growth |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|")
    for contender in contenders:
        if contender["key"] not in results["transfers"]:
            continue  # a reference, measured on the 1 KB GET only
        transfers = results["transfers"][contender["key"]]
        line = f"| {contender['label']} |"
        for direction in ("download", "upload"):
            t = transfers[direction]
            line += (
                f" {t['size'] / 1e6 / t['seconds']:,.0f} |"
                f" {_mb(t['rss_baseline'])} → {_mb(t['rss_peak'])} |"
                f" +{_mb(t['rss_peak'] - t['rss_baseline'])} |"
            )
        add(line)
    add("")

    add("## Slow upstream\n")
    add(
        f"{settings['slow_requests']} concurrent requests go to a path whose upstream takes "
        f"{settings['slow_seconds']:g} s to answer; {settings['probe_after']:g} s later one "
        "request goes to a fast path (the hello-world upstream). Default configuration: "
        "the gateway is not tuned for this.\n"
    )
    add(
        "| contender | slow requests in flight | fast request answered in | "
        "slow requests answered 200 | all done after |"
    )
    add("|---|---:|---:|---:|---:|")
    for key, slow in results["slow"].items():
        add(
            f"| {labels[key]} | {slow['in_flight_at_probe']} | "
            f"{slow['probe_seconds'] * 1000:.1f} ms (status {slow['probe_status']}) | "
            f"{slow['succeeded']}/{slow['requests']} | {slow['all_done_seconds']:.2f} s |"
        )
    add("")

    latencies = results.get("revocation_seconds")
    if latencies:
        add("## Shared state\n")
        add(
            "The row *wechat-gateway, state in Redis* above is the gateway with `state.url` on a "
            "local `redis-server`, one of two replicas sharing it; reading a session never "
            "waits on the store, so its req/s should match the embedded SQLite store's. "
            f"Then {len(latencies)} times: a fresh session is used on the other replica, "
            "revoked in Redis, and that replica polled every 2 ms until it refuses the "
            f"session: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
            f"p90 {percentile(latencies, 90) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms.\n"
        )

    out.extend(variants_markdown(results))

    if "websocket" in results:
        out.extend(ws_report.markdown(results["websocket"]))

    add("## Server logs\n")
    problems = {
        **(results.get("log_problems") or {}),
        **(results.get("websocket", {}).get("log_problems") or {}),
    }
    if not problems:
        add("No server (upstreams, ProxyMiddleware, nginx, gateway) logged a warning or error.\n")
    for name, lines in problems.items():
        add(f"`{name}` logged {len(lines)} warning or error lines; the first ones:\n")
        add("```\n" + "\n".join(lines[:5]) + "\n```\n")

    add("## Session cookie codec\n")
    add(
        "Decoding the session cookie runs on every proxied request, so its cost is part of "
        "every number above. `bench/session_codec.py`:\n"
    )
    add(results["session_codec"].strip() + "\n")

    add("## What runs\n")
    for contender in contenders:
        add(f"- **{contender['label']}**: {contender['setup']}")
    for line in results["setup_notes"]:
        add(f"- {line}")
    add("")

    add("## Machine\n")
    add("| | |")
    add("|---|---|")
    for name, value in results["machine"].items():
        add(f"| {name} | {value} |")
    add("")

    add("## Running it\n")
    add(
        "```sh\nmake bench\n```\n\n"
        "It installs `wrk` and `nginx-light` with apt-get if they are missing (as root), "
        "starts every process on free loopback ports, runs for about "
        f"{results['wall_seconds'] / 60:.0f} minutes, stops everything, and rewrites this "
        "page, its chart and a JSON copy of the raw results in `bench/results/`. "
        "`python bench/run.py --help` lists the knobs (durations, runs, transfer size); "
        "`bench/README.md` describes the files.\n"
    )
    return "\n".join(out)


def variants_markdown(results: Results) -> list[str]:
    """The gateway next to its variants with assertions off and JSON logs, and what signing
    and verifying an assertion costs."""
    keys = [
        k for k in ("gateway", "gateway_no_assertion", "gateway_json") if k in results["throughput"]
    ]
    if len(keys) < 2 and "assertion" not in results:
        return []
    labels = {c["key"]: c["label"] for c in results["contenders"]}
    connections = results["settings"]["connections"]
    out = ["## Assertions and log format\n"]
    out.append(
        "The gateway signs `X-WeChat-Assertion` (an ES256 JWT) for every request with an "
        "identity and reuses it per session and audience for 4 minutes; it writes an access "
        "line per request, as text or, with `server.log_format: json`, as one JSON object. "
        "The rows after the first differ from the default gateway in that one setting each "
        "and ran in the same rounds, right after it, with the same signed-in session cookie "
        "on every request (so the default gateway signs once per worker, then reuses). "
        "Median of the rounds; CPU is the gateway's own processes' per request. The targets "
        "are under [Targets](#targets).\n"
    )
    header, rule = "| gateway |", "|---|"
    for n in connections:
        header += f" req/s ({n} conns) | CPU µs/req ({n} conns) |"
        rule += "---:|---:|"
    out += [header, rule]
    for key in keys:
        line = f"| {labels[key]} |"
        for n in connections:
            line += (
                f" {median_run(results, key, n)['rps']:,.0f} | {median_cpu(results, key, n):,.0f} |"
            )
        out.append(line)
    out.append("")
    if "assertion" in results:
        out.append("### Signing and verifying an assertion\n")
        out.append(
            "`bench/assertion.py`, in the benchmark's own process: a fresh signature (what "
            "the first request of a session pays, once per worker, audience and groups, and "
            "again every 4 minutes), the reuse every other request pays, and what an app "
            "pays to verify one (its JWKS already fetched).\n"
        )
        out.append(assertion_table(results["assertion"]) + "\n")
    return out


def assertion_table(measured: dict[str, Any]) -> str:
    """``bench/assertion.py``'s measurements as a Markdown table, with what they ran on."""
    lines = [measured["about"], "", "| operation | µs per call |", "|---|---:|"]
    lines += [f"| {c['operation']} | {c['us_per_call']:.1f} |" for c in measured["cases"]]
    return "\n".join(lines)


def _nice_step(top: float, ticks: int = 5) -> float:
    raw = top / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def rps_chart(results: Results) -> str:
    """A grouped bar chart of median req/s per contender and connection count, as SVG."""
    contenders = results["contenders"]
    connections = results["settings"]["connections"]
    values = {
        (c["key"], n): median_run(results, c["key"], n)["rps"]
        for c in contenders
        for n in connections
    }
    width, height = max(760, 90 + 115 * len(contenders)), 400
    left, right, top, bottom = 70, 20, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    step = _nice_step(max(values.values()) * 1.1)
    y_max = step * math.ceil(max(values.values()) * 1.1 / step)

    def y(value: float) -> float:
        return top + plot_h - value / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
        "1 KB GET: requests per second (median of "
        f"{results['settings']['runs']} runs, higher is better)</text>",
    ]
    tick = 0.0
    while tick <= y_max + 1e-9:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:,.0f}</text>'
        )
        tick += step
    group_w = plot_w / len(contenders)
    bar_w = group_w * 0.7 / len(connections)
    for i, contender in enumerate(contenders):
        x0 = left + i * group_w + group_w * 0.15
        for j, n in enumerate(connections):
            value = values[(contender["key"], n)]
            x = x0 + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w - 2:.1f}" '
                f'height="{top + plot_h - y(value):.1f}" fill="{_COLOURS[j % len(_COLOURS)]}"/>'
                f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y(value) - 4:.1f}" '
                f'text-anchor="middle" font-size="11">{value:,.0f}</text>'
            )
        parts.append(
            f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{top + plot_h + 20}" '
            f'text-anchor="middle">{escape(contender["short"])}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'stroke="#333"/>'
    )
    for j, n in enumerate(connections):
        x = left + j * 150
        parts.append(
            f'<rect x="{x}" y="{height - 24}" width="12" height="12" '
            f'fill="{_COLOURS[j % len(_COLOURS)]}"/>'
            f'<text x="{x + 18}" y="{height - 14}">{n} connections</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
