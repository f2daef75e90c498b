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
# Issue 16, the second hop, each against another contender in the same run: upload MB/s
# at least nginx's; CPU per proxied 1 KB GET at 16 connections at most this multiple of the
# hello-world's on the gateway's own worker (no hop); p50 latency added over the no-hop
# hello-world's at 1 connection at most this multiple of nginx's; req/s at 256 connections
# at least this share of the no-hop hello-world's in every round.
TARGET_UPLOAD_VS_NGINX = 1.0
TARGET_CPU_VS_HELLO = 2.5
CPU_CONNECTIONS = 16
TARGET_ADDED_P50_VS_NGINX = 2.0
LIGHT_CONNECTIONS = 1
TARGET_HEAVY_VS_NO_HOP = 0.30
HEAVY_CONNECTIONS = 256
# Rounds of one contender further apart than this (relative to their median): say so.
NOISY_SPREAD = 0.3
# The "measured" of a target this run has no data for (older saved results, --only).
NOT_MEASURED = "not measured"

_COLOURS = ("#4e79a7", "#f28e2b")

Results = dict[str, Any]
#: (target, measured, passed); passed is None when the run did not measure it.
Row = tuple[str, str, bool | None]


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


def _verdict(ok: bool | None) -> str:
    return NOT_MEASURED if ok is None else "**PASS**" if ok else "**FAIL**"


def verdict_word(ok: bool | None) -> str:
    """PASS, FAIL, or SKIP for a target the run did not measure: the console's word."""
    return "SKIP" if ok is None else "PASS" if ok else "FAIL"


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


def targets(results: Results) -> list[Row]:
    """(target, measured, passed) for every target the issues set; for a run with ``--only``,
    those it measured. ``passed`` is None for a target the results hold no data for (an
    older run): its ``measured`` says so."""
    if results.get("only"):
        rows: list[Row] = list(variant_targets(results))
        if "hop" in results["only"]:
            rows += hop_targets(results)
        return rows
    rows = []
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
    rows += hop_targets(results)
    if "websocket" in results:
        rows += ws_report.targets(results["websocket"])
    return rows


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def _runs(results: Results, key: str, connections: int) -> list[dict[str, Any]]:
    """The wrk runs of ``key`` at ``connections``; empty when the run did not measure them."""
    return list(results["throughput"].get(key, {}).get(str(connections)) or [])


def _over(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _range(values: list[float], style: str) -> str:
    """``rounds: lowest to highest`` of per-round values, or ``1 round``."""
    if len(values) == 1:
        return "1 round"
    return f"rounds: {style.format(min(values))} to {style.format(max(values))}"


def upload_rates(records: list[dict[str, Any]]) -> list[float]:
    """MB/s (10⁶ bytes per second) of each upload round."""
    return [r["size"] / 1e6 / r["seconds"] for r in records]


def hop_targets(results: Results) -> list[Row]:
    """Issue 16's targets on the second hop: upload MB/s against nginx's, CPU per request
    against the hello-world's, the p50 latency added at 1 connection against nginx's, and
    req/s at 256 connections against the no-hop hello-world's in every round."""
    return [
        _upload_target(results),
        _cpu_target(results),
        _latency_target(results),
        _heavy_target(results),
    ]


def _upload_target(results: Results) -> Row:
    uploads = results.get("uploads") or {}
    name = "gateway upload MB/s ≥ " + (
        "nginx's" if TARGET_UPLOAD_VS_NGINX == 1 else f"{TARGET_UPLOAD_VS_NGINX:g}× nginx's"
    )
    if not uploads.get("gateway") or not uploads.get("nginx"):
        return name, NOT_MEASURED, None
    size = _size_label(uploads["gateway"][0]["size"])
    rounds = len(uploads["gateway"])
    name += f" ({size} upload, median of {rounds} interleaved rounds)"
    gateway, nginx = upload_rates(uploads["gateway"]), upload_rates(uploads["nginx"])
    g, n = statistics.median(gateway), statistics.median(nginx)
    ratios = [a / b for a, b in zip(gateway, nginx, strict=True)]
    no_hop = (
        f"; no hop {statistics.median(upload_rates(uploads['no_hop'])):,.0f} MB/s"
        if uploads.get("no_hop")
        else ""
    )
    return (
        name,
        f"{g / n:.2f}× ({g:,.0f} vs {n:,.0f} MB/s; {_range(ratios, '{:.2f}×')}{no_hop})",
        g >= TARGET_UPLOAD_VS_NGINX * n,
    )


def _cpu_target(results: Results) -> Row:
    n = CPU_CONNECTIONS
    name = (
        f"CPU per proxied 1 KB GET ({n} connections) ≤ {TARGET_CPU_VS_HELLO:g}× the hello-world's"
    )
    gateway, hello = _runs(results, "gateway", n), _runs(results, "no_hop_gateway_worker", n)
    if not gateway or not hello:
        return name, NOT_MEASURED, None
    g, h = median_cpu(results, "gateway", n), median_cpu(results, "no_hop_gateway_worker", n)
    ratios = [
        _over(a["cpu_us_per_request"], b["cpu_us_per_request"])
        for a, b in zip(gateway, hello, strict=True)
    ]
    stock = ""
    if _runs(results, "no_hop", n):
        s = median_cpu(results, "no_hop", n)
        stock = f"; on gunicorn's stock worker the hello-world's {s:,.0f} µs, {_over(g, s):.2f}×"
    if _runs(results, "bare_forwarder", n):
        b = median_cpu(results, "bare_forwarder", n)
        stock += f"; the bare forwarder alone {b:,.0f} µs, {_over(b, h):.2f}×"
    return (
        name,
        f"{_over(g, h):.2f}× ({g:,.0f} vs {h:,.0f} µs/req: the gateway's processes vs the "
        f"no-hop hello-world on the gateway's worker; {_range(ratios, '{:.2f}×')}{stock})",
        g <= TARGET_CPU_VS_HELLO * h,
    )


def _added_p50(results: Results, key: str, connections: int) -> list[float]:
    """Per round, ``key``'s p50 minus the no-hop hello-world's, in milliseconds."""
    ours, hello = _runs(results, key, connections), _runs(results, "no_hop", connections)
    return [a["p50_ms"] - b["p50_ms"] for a, b in zip(ours, hello, strict=True)]


def _latency_target(results: Results) -> Row:
    n = LIGHT_CONNECTIONS
    name = (
        f"added p50 latency at {n} connection{'s' if n != 1 else ''} ≤ "
        f"{TARGET_ADDED_P50_VS_NGINX:g}× nginx's"
    )
    if not all(_runs(results, key, n) for key in ("gateway", "nginx", "no_hop")):
        return name, NOT_MEASURED, None
    hello = median_run(results, "no_hop", n)["p50_ms"]
    g = median_run(results, "gateway", n)["p50_ms"] - hello
    x = median_run(results, "nginx", n)["p50_ms"] - hello
    ratios = [
        _over(a, b)
        for a, b in zip(
            _added_p50(results, "gateway", n), _added_p50(results, "nginx", n), strict=True
        )
    ]
    ratio = f"{g / x:.2f}×" if x > 0 else "n/a (nginx added nothing)"
    bare = ""
    if _runs(results, "bare_forwarder", n):
        b = median_run(results, "bare_forwarder", n)["p50_ms"] - hello
        bare = f"; the bare forwarder alone +{b:.3f} ms" + (f", {b / x:.2f}×" if x > 0 else "")
    return (
        name,
        f"{ratio} (gateway +{g:.3f} ms vs nginx +{x:.3f} ms over the no-hop p50 of "
        f"{hello:.3f} ms; {_range(ratios, '{:.2f}×')}{bare})",
        g <= TARGET_ADDED_P50_VS_NGINX * x,
    )


def _heavy_target(results: Results) -> Row:
    n = HEAVY_CONNECTIONS
    name = (
        f"gateway req/s at {n} connections ≥ {TARGET_HEAVY_VS_NO_HOP:.0%} of the no-hop "
        "hello-world's in every round"
    )
    if not _runs(results, "gateway", n) or not _runs(results, "no_hop", n):
        return name, NOT_MEASURED, None
    ratios = _ratios(results, "gateway", "no_hop", n)
    g = median_run(results, "gateway", n)["rps"]
    h = median_run(results, "no_hop", n)["rps"]
    nginx = ""
    if _runs(results, "nginx", n):
        nginx = f"; nginx {median_run(results, 'nginx', n)['rps'] / h:.0%} of it"
    return (
        name,
        f"lowest round {min(ratios):.0%} ({_range(ratios, '{:.0%}')}; medians {g:,.0f} vs "
        f"{h:,.0f} req/s{nginx})",
        min(ratios) >= TARGET_HEAVY_VS_NO_HOP,
    )


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
    passed = sum(ok is True for _, _, ok in rows)
    measured = sum(ok is not None for _, _, ok in rows)
    add("## Targets\n")
    unmeasured = (
        f" {len(rows) - measured} not measured in this run (its results predate them)."
        if measured < len(rows)
        else ""
    )
    add(f"{passed} of {measured} targets met.{unmeasured}\n")
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
    out.extend(cpu_ratio_markdown(results))
    out.extend(extra_connections_markdown(results))
    out.extend(upload_rounds_markdown(results))

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

    add("## Flame graphs\n")
    add(
        "Where the gateway's CPU time goes under the 16-connection 1 KB GET and under a "
        "256 MiB upload: py-spy flame graphs and a reading of them in "
        "[profiles/](profiles/README.md), recorded by `bench/flames.py` (not part of this "
        "run).\n"
    )

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
        "`python bench/run.py --help` lists the knobs (durations, runs, the extra "
        "connection counts and their rounds, transfer and upload sizes); "
        "`bench/README.md` describes the files.\n"
    )
    return "\n".join(out)


def cpu_ratio_markdown(results: Results) -> list[str]:
    """Issue 16's CPU comparison: the gateway's CPU per request over the hello-world's, on
    the gateway's own worker and on gunicorn's, at every connection count measured."""
    out = ["### CPU per proxied request against the hello-world\n"]
    if "no_hop_gateway_worker" not in results["throughput"]:
        return [*out, f"The hello-world on the gateway's worker: {NOT_MEASURED} in this run.\n"]
    out.append(
        "The gateway's own processes' CPU per request (median of the rounds, µs) against "
        "the no-hop hello-world's, first on the gateway's own worker class (the same worker "
        "without the hop: what the second hop, the session and the identity headers cost; "
        f"the target is at most {TARGET_CPU_VS_HELLO:g}× at {CPU_CONNECTIONS} connections), "
        "then on gunicorn's stock gevent worker, with nginx's for scale.\n"
    )
    bare = "bare_forwarder" in results["throughput"]
    if bare:
        out.append(
            "*Bare forwarder* is the gateway's `Forwarder` alone on the same worker (no "
            "session, rules, identity headers, assertion, metrics or access line): the floor "
            "under the gateway's figure, the second hop by itself, with its own ratio to the "
            "hello-world.\n"
        )
    out += [
        "| connections | wechat-gateway | hello-world, gateway's worker | gateway ÷ that | "
        + ("bare forwarder | bare ÷ hello-world | " if bare else "")
        + "hello-world, gunicorn's worker | gateway ÷ that | nginx |",
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if bare else ""),
    ]
    counts = sorted({*results["settings"]["connections"], *_extra_counts(results)})

    def cpu(key: str, n: int) -> float | None:
        return median_cpu(results, key, n) if _runs(results, key, n) else None

    def cell(value: float | None) -> str:
        return NOT_MEASURED if value is None else f"{value:,.0f}"

    for n in counts:
        g, own, stock = cpu("gateway", n), cpu("no_hop_gateway_worker", n), cpu("no_hop", n)
        nginx = cpu("nginx", n)
        floor = ""
        if bare:
            b = cpu("bare_forwarder", n)
            over = f"{_over(b, own):.2f}×" if b is not None and own is not None else "—"
            floor = f"{cell(b)} | {over} | "
        out.append(
            f"| {n} | {cell(g)} | {cell(own)} | "
            f"{f'{_over(g, own):.2f}×' if g is not None and own is not None else '—'} | "
            f"{floor}{cell(stock)} | "
            f"{f'{_over(g, stock):.2f}×' if g is not None and stock is not None else '—'} | "
            f"{cell(nginx)} |"
        )
    out.append("")
    return out


def _extra_counts(results: Results) -> list[int]:
    return list(results["settings"].get("extra_connections") or [])


def extra_connections_markdown(results: Results) -> list[str]:
    """Issue 16's light and heavy load: a table per extra connection count (1 and 256)."""
    settings = results["settings"]
    counts = _extra_counts(results) or [LIGHT_CONNECTIONS, HEAVY_CONNECTIONS]
    out = [f"## {' and '.join(str(n) for n in counts)} connections\n"]
    if not _extra_counts(results):
        return [*out, f"{NOT_MEASURED.capitalize()} in this run.\n"]
    out.append(
        f"wrk, keep-alive, {settings['extra_duration']:g} s per run; median of "
        f"{settings['extra_runs']} runs, made in the first rounds of the 1 KB GET above and "
        "interleaved the same way. At 1 connection nothing queues, so the p50 shows what a "
        "hop adds to one request: *added p50* is the contender's p50 minus the no-hop "
        "hello-world's. At 256, req/s, and their share of the no-hop hello-world's (median "
        "of the rounds, then the lowest and highest round in brackets). CPU is the "
        "contender's own processes' per request. Latency in milliseconds.\n"
    )
    labels = [(c["key"], c["label"]) for c in results["contenders"]]
    for n in counts:
        out.append(f"### {n} connection{'s' if n != 1 else ''}\n")
        out += [
            "| contender | req/s | share of no hop's | p50 | added p50 | p99 | CPU µs/req |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        hello = median_run(results, "no_hop", n) if _runs(results, "no_hop", n) else None
        notes = []
        for key, label in labels:
            if not _runs(results, key, n):
                continue
            run = median_run(results, key, n)
            share = added = "—"
            if hello is not None and key != "no_hop":
                ratios = _ratios(results, key, "no_hop", n)
                share = f"{run['rps'] / hello['rps']:.0%}"
                if len(ratios) > 1:
                    share += f" ({min(ratios):.0%} to {max(ratios):.0%})"
                added = f"{run['p50_ms'] - hello['p50_ms']:+.3f}"
            out.append(
                f"| {label} | {run['rps']:,.0f} | {share} | {run['p50_ms']:.3f} | {added} | "
                f"{run['p99_ms']:.2f} | {median_cpu(results, key, n):,.0f} |"
            )
            if run["errors"]:
                notes.append(
                    f"- {label}: {run['errors']:,} errors (socket errors or non-2xx/3xx) "
                    "over all runs."
                )
        out.append("")
        if notes:
            out += [*notes, ""]
    return out


def upload_rounds_markdown(results: Results) -> list[str]:
    """Issue 16's upload comparison: each round's MB/s, the median, the ratio to nginx's and
    the CPU time spent per GB."""
    uploads = results.get("uploads") or {}
    size = results["settings"].get("upload_size")
    if not uploads or not size:
        return ["## Upload rounds\n", f"{NOT_MEASURED.capitalize()} in this run.\n"]
    rounds = max(len(records) for records in uploads.values())
    out = [f"## {_size_label(size)} upload, {rounds} interleaved rounds\n"]
    out.append(
        f"One client POSTs {_size_label(size)} in 1 MiB writes to each contender in turn, "
        f"{rounds} rounds, every other one in reverse order; the upstream reads and "
        "discards the body and answers its length, which the client checks. MB/s is 10⁶ "
        "bytes per second at the client; the median is what the target compares. CPU is "
        "the user plus system time of the contender's processes, and of the upstream "
        "behind it, per GB (10⁹ bytes) carried, median of the rounds.\n"
    )
    labels = {c["key"]: c["label"] for c in results["contenders"]}
    nginx = statistics.median(upload_rates(uploads["nginx"])) if uploads.get("nginx") else None
    out += [
        "| contender | "
        + " | ".join(f"round {i}" for i in range(1, rounds + 1))
        + " | median MB/s | vs nginx | CPU s/GB | upstream CPU s/GB |",
        "|---|" + "---:|" * (rounds + 4),
    ]
    for key, records in uploads.items():
        rates = upload_rates(records)
        cells = [f"{rate:,.0f}" for rate in rates] + ["—"] * (rounds - len(rates))
        median = statistics.median(rates)
        per_gb = statistics.median(r["cpu_seconds"] / (r["size"] / 1e9) for r in records)
        behind = [r["upstream_cpu_seconds"] for r in records]
        upstream = "(is the upstream)"
        if None not in behind:
            pairs = zip(behind, records, strict=True)
            upstream = f"{statistics.median(b / (r['size'] / 1e9) for b, r in pairs):.2f}"
        out.append(
            f"| {labels.get(key, key)} | {' | '.join(cells)} | {median:,.0f} | "
            f"{f'{median / nginx:.2f}×' if nginx else '—'} | {per_gb:.2f} | {upstream} |"
        )
    out.append("")
    return out


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
