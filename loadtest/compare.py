"""Compare two runs (their results.json): a table and compare.html, regressions beyond a tolerance flagged.

A regression is a change in the bad direction larger than `tolerance` (relative): latency up, throughput or
goodput down, error rate up (error rate compares absolutely, since a 0 baseline makes ratios meaningless)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.metrics import flat
from loadtest.report import STYLE

# (metric as in `metrics.flat`, higher is better)
METRICS = (
    ("tokens_per_s", True), ("request_rate", True), ("goodput", True), ("error_rate", False),
    *((f"{m}_{s}", False) for m in ("ttft", "itl", "latency") for s in ("p50", "p95", "p99")),
)  # fmt: skip


@dataclass(frozen=True)
class Delta:
    metric: str
    baseline: float | None
    candidate: float | None
    change: float | None  # relative (absolute for error_rate); positive = worse
    regression: bool


def load(run: Path) -> dict[str, Any]:
    """A run directory or its results.json."""
    path = run / "results.json" if run.is_dir() else run
    return json.loads(path.read_text())


def compare(baseline: dict[str, Any], candidate: dict[str, Any], tolerance: float = 0.1) -> list[Delta]:
    a, b = flat(baseline["overall"]), flat(candidate["overall"])
    deltas = []
    for metric, higher_is_better in METRICS:
        old, new = a.get(metric), b.get(metric)
        if old is None or new is None:
            deltas.append(Delta(metric, old, new, None, False))
            continue
        if metric == "error_rate":
            worse = new - old
        else:
            worse = (old - new if higher_is_better else new - old) / old if old else 0.0
        deltas.append(Delta(metric, old, new, worse, worse > tolerance))
    return deltas


def write_html(deltas: list[Delta], names: tuple[str, str], tolerance: float, path: Path) -> None:
    regressions = [d for d in deltas if d.regression]
    banner = (
        f'<div class="verdict fail">{len(regressions)} regression(s) beyond {tolerance:.0%}: '
        f"{html.escape(', '.join(d.metric for d in regressions))}</div>"
        if regressions
        else f'<div class="verdict pass">No regression beyond {tolerance:.0%}</div>'
    )
    rows = "".join(
        f'<tr class="{"regression" if d.regression else ""}"><td>{d.metric}</td><td>{fmt(d.baseline)}</td>'
        f"<td>{fmt(d.candidate)}</td><td>{'–' if d.change is None else f'{-d.change:+.1%}'}</td>"
        f"<td>{'REGRESSION' if d.regression else ''}</td></tr>"
        for d in deltas
    )
    a, b = (html.escape(n) for n in names)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>servekit load test comparison</title>"
        f"<style>{STYLE}</style></head><body><h1>{a} → {b}</h1>{banner}<table><tr><th>metric</th><th>{a}</th>"
        f"<th>{b}</th><th>change (+ = better)</th><th></th></tr>{rows}</table></body></html>"
    )


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
