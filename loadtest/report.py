"""The run report: ONE self-contained HTML file (plots inlined as base64 PNGs), SLO verdict first.

Self-contained so it can be attached to a rollout's audit log, mailed or opened offline as one file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from loadtest.metrics import RequestRecord

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
.verdict{padding:1em 1.5em;border-radius:6px;font-size:1.3em;font-weight:600}
.pass{background:#e6f4ea;color:#137333}.fail{background:#fce8e6;color:#a50e0e}.none{background:#eef2f7}
.regression{background:#fce8e6}"""
ROWS = (  # (label, summary key, statistic or None, scale, unit)
    ("requests", "requests", None, 1, ""), ("errors", "errors", None, 1, ""),
    ("error rate", "error_rate", None, 100, "%"), ("request rate", "request_rate", None, 1, "req/s"),
    ("output tokens/s", "tokens_per_s", None, 1, "tok/s"), ("goodput", "goodput", None, 100, "%"),
    *((f"{m} {s}", m, s, 1000, "ms") for m in ("ttft", "itl", "latency") for s in ("p50", "p90", "p95", "p99")),
    ("tokens/s per request p50", "request_tokens_per_s", "p50", 1, "tok/s"),
)  # fmt: skip


def png(fig: plt.Figure) -> str:
    """The figure as an inline <img> (base64 PNG); closes it."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def cell(summary: dict[str, Any], key: str, stat: str | None, scale: float, unit: str) -> str:
    value = summary[key][stat] if stat else summary[key]
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    scaled = value * scale
    return f"{scaled:.1f} {unit}".strip() if abs(scaled) >= 100 else f"{scaled:.3g} {unit}".strip()


def summary_table(columns: dict[str, dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        f"<tr><td>{label}</td>" + "".join(f"<td>{cell(s, *spec)}</td>" for s in columns.values()) + "</tr>"
        for label, *spec in ROWS
    )
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def plot_over_time(timeline: list[dict[str, Any]]) -> str:
    t = [row["t"] for row in timeline]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for axis, metric, title in zip(
        axes.flat[:3], ("ttft", "itl", "latency"), ("TTFT", "inter-token latency", "end-to-end latency"), strict=True
    ):
        for stat, style in (("p50", "-o"), ("p95", "--s")):
            points = [(row["t"], 1000 * row[f"{metric}_{stat}"]) for row in timeline if row[f"{metric}_{stat}"]]
            axis.plot([x for x, _ in points], [y for _, y in points], style, markersize=3, label=stat)
        axis.set(title=f"{title} over time", xlabel="s since start", ylabel="ms")
        axis.legend()
    axis = axes.flat[3]
    axis.plot(t, [row["tokens_per_s"] for row in timeline], "-o", markersize=3, color="#3b7dd8", label="output tok/s")
    axis.set(title="throughput and users over time", xlabel="s since start", ylabel="tok/s")
    twin = axis.twinx()
    twin.step(t, [row["users"] for row in timeline], where="mid", color="#e8710a", label="users")
    twin.set(ylabel="users", ylim=(0, max(row["users"] for row in timeline) * 1.15 + 1))
    axis.legend(loc="upper left")
    twin.legend(loc="upper right")
    return png(fig)


def plot_ttft_cdf(records: list[RequestRecord]) -> str:
    fig, axis = plt.subplots(figsize=(7, 4))
    for version in sorted({r.version for r in records}):
        ttfts = np.sort([1000 * r.ttft_s for r in records if r.ok and r.version == version and r.ttft_s is not None])
        if ttfts.size:
            axis.plot(ttfts, np.arange(1, ttfts.size + 1) / ttfts.size, label=version)
    axis.set(title="TTFT CDF by version", xlabel="TTFT ms", ylabel="share of requests", ylim=(0, 1.02))
    axis.legend()
    axis.grid(alpha=0.3)
    return png(fig)


def plot_sweep(stages: list[dict[str, Any]]) -> str:
    users = [row["users"] for row in stages]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(users, [row["tokens_per_s"] for row in stages], "-o", label="output tok/s")
    left.set(title="throughput vs concurrency", xlabel="concurrent users", ylabel="output tok/s")
    twin = left.twinx()
    twin.plot(users, [row["request_rate"] for row in stages], "--s", color="#e8710a", label="req/s")
    twin.set_ylabel("req/s")
    latency = [np.nan if row["latency"]["p95"] is None else 1000 * row["latency"]["p95"] for row in stages]
    right.plot([row["tokens_per_s"] for row in stages], latency, "-o")
    for x, y, n in zip([row["tokens_per_s"] for row in stages], latency, users, strict=True):
        right.annotate(f"{n} users", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    right.set(title="latency p95 vs throughput", xlabel="output tok/s", ylabel="latency p95 ms")
    return png(fig)


def plot_versions(by_version: dict[str, dict[str, Any]]) -> str:
    versions = list(by_version)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = np.arange(len(versions))
    for axis, metric, title in zip(axes[:2], ("ttft", "itl"), ("TTFT ms", "ITL ms"), strict=True):
        for offset, stat in ((-0.2, "p50"), (0.2, "p95")):
            axis.bar(x + offset, [1000 * (by_version[v][metric][stat] or 0) for v in versions], 0.4, label=stat)
        axis.set_xticks(x, versions, rotation=15)
        axis.set_title(f"{title} by version")
        axis.legend()
    axes[2].bar(x, [by_version[v]["tokens_per_s"] for v in versions], color="#3b7dd8")
    axes[2].set_xticks(x, versions, rotation=15)
    axes[2].set_title("output tok/s by version")
    return png(fig)


def verdict(slo: dict[str, Any]) -> str:
    if not slo["objectives"]:
        return '<div class="verdict none">No SLO given</div>'
    objectives = html.escape(", ".join(slo["objectives"]))
    if slo["passed"]:
        return f'<div class="verdict pass">SLO PASSED: {objectives}</div>'
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in slo["breaches"])
    return f'<div class="verdict fail">SLO BREACHED: {objectives}<ul>{lines}</ul></div>'


def write_report(results: dict[str, Any], records: list[RequestRecord], path: Path) -> None:
    config = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in results["config"].items()
    )
    sections = [
        verdict(results["slo"]),
        "<h2>Summary (overall and by serving version)</h2>",
        summary_table({"overall": results["overall"], **results["by_version"]}),
    ]
    if results["timeline"]:
        sections += ["<h2>Over time</h2>", plot_over_time(results["timeline"])]
    if any(r.ok and r.ttft_s is not None for r in records):
        sections += ["<h2>TTFT distribution</h2>", plot_ttft_cdf(records)]
    if len(results["stages"]) > 1:
        sections += ["<h2>Throughput vs concurrency</h2>", plot_sweep(results["stages"])]
    if results["by_version"]:
        sections += ["<h2>Versions side by side</h2>", plot_versions(results["by_version"])]
    sections += [f"<h2>Configuration</h2><table>{config}</table>"]
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>servekit load test</title><style>{STYLE}</style>"
        f"</head><body><h1>servekit load test</h1>{''.join(sections)}</body></html>"
    )
