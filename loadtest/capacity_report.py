"""The capacity plot (capacity.png: goodput and p95 latencies against concurrency, the knee marked) and the
page that shows it with the curve as a table (capacity.html)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest.report import STYLE
from loadtest.slo import parse_slo


def slo_limit(slo: list[str], metric: str) -> float | None:
    """The bound a `<`/`<=` clause puts on `metric` (seconds), to draw as a line."""
    bounds = [o.value for o in parse_slo(",".join(slo)) if o.metric == metric and o.op in ("<", "<=")] if slo else []
    return min(bounds, default=None)


def write_plot(profile: dict[str, Any], path: Path) -> None:
    """Top: requests/s and goodput/s per concurrency (closed loop); middle: p95 TTFT and ITL with the SLO's
    bounds; the knee a vertical line through both. Bottom (if measured): goodput against offered arrival rate."""
    closed = [p for p in profile["curve"] if p["mode"] == "closed"]
    opened = [p for p in profile["curve"] if p["mode"] == "open"]
    users = [p["concurrency"] for p in closed]
    fig = plt.figure(figsize=(8, 10 if opened else 7))
    rates = fig.add_subplot(3 if opened else 2, 1, 1)
    latency = fig.add_subplot(3 if opened else 2, 1, 2, sharex=rates)
    rates.plot(users, [p["request_rate"] for p in closed], "o-", color="#9aa5b1", label="requests/s")
    rates.plot(users, [p["goodput_rate"] for p in closed], "o-", color="#137333", label="goodput/s (meets SLO)")
    failing = [p for p in closed if not p["meets_slo"]]
    rates.plot([p["concurrency"] for p in failing], [p["goodput_rate"] for p in failing], "x", color="#a50e0e",
               markersize=10, label="SLO not met")  # fmt: skip
    rates.set_ylabel("requests / s")
    for metric, color in (("ttft_p95", "#1a73e8"), ("itl_p95", "#e37400")):
        values = [p[metric] * 1000 if p[metric] is not None else float("nan") for p in closed]
        latency.plot(users, values, "o-", color=color, label=metric)
        if (bound := slo_limit(profile["slo"], metric)) is not None:
            latency.axhline(bound * 1000, color=color, linestyle="--", linewidth=1, label=f"SLO {metric}")
    latency.set_ylabel("p95 (ms)")
    latency.set_yscale("log")
    latency.set_xlabel("concurrency (closed-loop users)")
    if knee := profile["knee"]:
        for axis in (rates, latency):
            axis.axvline(knee["concurrency"], color="#137333", linestyle=":", linewidth=2)
        label = f"knee: {knee['concurrency']} users, {knee['goodput_rate']:.2f} good req/s"
        at = (knee["concurrency"], knee["goodput_rate"])
        last = knee["concurrency"] == max(users)
        rates.annotate(label, at, textcoords="offset points", xytext=(-8 if last else 8, -14),
                       ha="right" if last else "left")  # fmt: skip
    if len(set(users)) > 1:
        rates.set_xscale("log", base=2)
        rates.set_xticks(users, [str(u) for u in users])
    axes = [rates, latency]
    if opened:
        axes.append(arrivals := fig.add_subplot(3, 1, 3))
        offered = [p["offered_rate"] for p in opened]
        arrivals.plot(offered, offered, ":", color="#9aa5b1", label="offered")
        arrivals.plot(offered, [p["goodput_rate"] for p in opened], "o-", color="#137333", label="goodput/s")
        misses = [p for p in opened if not p["meets_slo"]]
        arrivals.plot([p["offered_rate"] for p in misses], [p["goodput_rate"] for p in misses], "x", color="#a50e0e",
                      markersize=10, label="SLO not met")  # fmt: skip
        if knee and knee["max_arrival_rate"] is not None:
            arrivals.axvline(knee["max_arrival_rate"], color="#137333", linestyle=":", linewidth=2)
        arrivals.set_xlabel("open loop: offered arrival rate (req/s)")
        arrivals.set_ylabel("requests / s")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    fig.suptitle(f"capacity of {profile['version']}  (SLO {', '.join(profile['slo'])})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page(profile: dict[str, Any], plot: Path, path: Path) -> None:
    """One self-contained page: the verdict, the plot (inlined), the whole curve."""
    knee = profile["knee"]
    verdict = (
        f'<div class="verdict pass">knee: {knee["concurrency"]} users, {knee["request_rate"]:.2f} req/s, '
        f"{knee['goodput_rate']:.2f} good req/s; highest open-loop rate within the SLO: "
        f"{knee['max_arrival_rate'] if knee['max_arrival_rate'] is not None else '–'} req/s</div>"
        if knee
        else '<div class="verdict fail">no load level met the SLO</div>'
    )
    image = base64.b64encode(plot.read_bytes()).decode()
    columns = ("mode", "concurrency", "offered_rate", "requests", "request_rate", "goodput_rate", "error_rate",
               "ttft_p95", "itl_p95", "latency_p95", "breaches")  # fmt: skip
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c, point[c]))}</td>" for c in columns) + "</tr>"
        for point in profile["curve"]
    )
    machine = html.escape(", ".join(f"{k}: {v}" for k, v in profile["machine"].items()))
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>capacity {html.escape(profile['version'])}</title>"
        f"<style>{STYLE}</style></head><body><h1>capacity of {html.escape(profile['version'])}</h1>"
        f"<p>SLO: {html.escape(', '.join(profile['slo']))} &middot; {machine}</p>{verdict}"
        f'<img alt="capacity plot" src="data:image/png;base64,{image}">'
        f"<h2>curve</h2><table><tr>{''.join(f'<th>{c}</th>' for c in columns)}</tr>{rows}</table></body></html>"
    )


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "; ".join(value)
    if column.endswith("_p95"):
        return f"{value * 1000:.3g} ms"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
