"""A shadow run's HTML report: one self-contained file (plots inlined), comparison first, then latency and
agreement plots, then the side-by-side samples when the run kept any. The release report reuses its pieces."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from loadtest.report import STYLE, png

ROWS = (  # (label, comparison key, format)
    ("pairs compared", "pairs", "{:d}"), ("at temperature 0", "compared", "{:d}"),
    ("agreement (token similarity)", "agreement", "{:.3f}"), ("exact-match rate", "exact_match_rate", "{:.1%}"),
    ("candidate error rate", "error_rate", "{:.2%}"), ("primary error rate", "primary_error_rate", "{:.2%}"),
    ("output length ratio", "output_length_ratio", "{:.3f}"),
    ("TTFT p50 ratio", "ttft_p50_ratio", "{:.3f}"), ("TTFT p95 ratio", "ttft_p95_ratio", "{:.3f}"),
    ("latency p50 ratio", "latency_p50_ratio", "{:.3f}"), ("latency p95 ratio", "latency_p95_ratio", "{:.3f}"),
)  # fmt: skip


def when(epoch: float | None) -> str:
    return "–" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def comparison_table(comparison: dict[str, Any]) -> str:
    """Candidate vs primary; ratios are candidate / primary."""
    rows = "".join(
        f"<tr><td>{label}</td><td>{'–' if comparison.get(key) is None else fmt.format(comparison[key])}</td></tr>"
        for label, key, fmt in ROWS
    )
    return f"<table><tr><th>candidate vs primary</th><th>value</th></tr>{rows}</table>"


def run_table(run: dict[str, Any]) -> str:
    """Tolerates a run recorded with fewer fields (an older audit entry): those rows show a dash."""
    dropped = ", ".join(f"{reason} {n}" for reason, n in (run.get("dropped") or {}).items())
    percent = run.get("percent")
    rows = (
        ("route", run.get("route")), ("primary", run.get("primary")), ("candidate", run.get("candidate")),
        ("percent of keys", None if percent is None else f"{percent:g} %"),
        ("max copies in flight", run.get("max_in_flight")), ("started", when(run.get("started_at"))),
        ("stopped", when(run.get("stopped_at"))), ("copies sent", run.get("mirrored")),
        ("copies dropped", dropped or None), ("candidate errors", run.get("candidate_errors")),
    )  # fmt: skip
    body = "".join(f"<tr><td>{name}</td><td>{html.escape('–' if v is None else str(v))}</td></tr>" for name, v in rows)
    return f"<table>{body}</table>"


def plot_pairs(pairs: list[dict[str, Any]]) -> str:
    """TTFT and latency distributions of both sides on the same requests, and the agreement histogram."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    both = [p for p in pairs if p["primary_ok"] and p["candidate_ok"]]
    for axis, metric, title in zip(axes[:2], ("ttft", "latency"), ("TTFT", "end-to-end latency"), strict=True):
        for side, color in (("primary", "#9aa5b1"), ("candidate", "#3b7dd8")):
            values = np.sort([1000 * v for p in both if (v := p[f"{side}_{metric}_s"]) is not None])
            if values.size:
                axis.plot(values, np.arange(1, values.size + 1) / values.size, color=color, label=side)
        axis.set(title=f"{title} CDF, same requests", xlabel="ms", ylabel="share of requests", ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend()
    similarities = [p["similarity"] for p in pairs if p["similarity"] is not None]
    axes[2].hist(similarities, bins=np.linspace(0, 1, 21), color="#3b7dd8")
    axes[2].set(title="token similarity at temperature 0", xlabel="1 - normalized edit distance", ylabel="requests")
    axes[2].yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 request
    return png(fig)


def samples_table(samples: list[dict[str, Any]]) -> str:
    cells = "".join(
        "<tr>" + "".join(f'<td class="text">{html.escape(str(s[k]))}</td>' for k in ("prompt", "primary", "candidate"))
        + f"<td>{'–' if s['similarity'] is None else format(s['similarity'], '.3f')}</td></tr>"
        for s in samples
    )  # fmt: skip
    return f"<table><tr><th>prompt</th><th>primary</th><th>candidate</th><th>similarity</th></tr>{cells}</table>"


def shadow_section(results: dict[str, Any]) -> str:
    """The run, its comparison and plots: the body of the shadow report and a section of the release report."""
    parts = [run_table(results["run"]), comparison_table(results["run"].get("comparison") or {})]
    if results.get("pairs"):
        parts.append(plot_pairs(results["pairs"]))
    else:
        parts.append("<p>No request was answered by both sides: nothing to plot.</p>")
    return "".join(parts)


def write_report(results: dict[str, Any], path: Path) -> None:
    run = results["run"]
    title = f"Shadow of {run['candidate']} on {run['route']}"
    sections = [f"<h1>{html.escape(title)}</h1>", shadow_section(results)]
    if results["samples"]:
        sections += ["<h2>Samples, side by side</h2>", samples_table(results["samples"])]
    style = STYLE + "td.text{text-align:left;white-space:pre-wrap;max-width:380px;vertical-align:top}"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
