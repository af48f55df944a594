"""Per-request records and their aggregation: percentiles, rates, goodput, per version, over time, per stage.

Pure data (no Locust): the Locust users produce `RequestRecord`s, the runner hands them here, and the report,
the comparison and the SLO check read what `summarize` returns. ITL is per request,
(last token - first token) / (tokens - 1), as genai-perf and llmperf define it, so one slow stream weighs
as much as one fast one."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from loadtest.slo import STATISTICS, Objective, meets_request_objectives

UNKNOWN_VERSION = "unknown"


@dataclass
class RequestRecord:
    """One request as the load generator saw it; one row of requests.csv."""

    started_at: float  # unix seconds, for the timeline
    endpoint: str
    version: str  # x-servekit-version of the response, UNKNOWN_VERSION if absent
    users: int  # active users when the request started: the concurrency level of a sweep
    ok: bool
    status: int  # HTTP status, 0 when no response arrived
    latency_s: float
    ttft_s: float | None = None
    itl_s: float | None = None
    output_tokens: int = 0
    max_tokens: int = 0
    error: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens/s of this one request (tokens over end-to-end latency)."""
        return self.output_tokens / self.latency_s if self.ok and self.latency_s > 0 else None


def latencies(record: RequestRecord) -> dict[str, float | None]:
    return {"ttft": record.ttft_s, "itl": record.itl_s, "latency": record.latency_s}


def percentiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """p50/p90/p95/p99/mean of the non-missing values (linear interpolation: monotone in q)."""
    data = np.array([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return dict.fromkeys(STATISTICS)
    quantiles = np.percentile(data, [50, 90, 95, 99])
    return {**{s: float(q) for s, q in zip(STATISTICS[:4], quantiles, strict=True)}, "mean": float(data.mean())}


def summarize(records: list[RequestRecord], wall_s: float, objectives: list[Objective] = ()) -> dict:
    """Run-level figures of `records` over `wall_s` seconds; the shape is documented in README (results.json)."""
    ok = [r for r in records if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    good = [r for r in ok if meets_request_objectives(objectives, latencies(r))]
    wall = max(wall_s, 1e-9)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
        "request_rate": len(ok) / wall,
        "output_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "goodput": len(good) / len(records) if records else 0.0,
        "ttft": percentiles(r.ttft_s for r in ok),
        "itl": percentiles(r.itl_s for r in ok),
        "latency": percentiles(r.latency_s for r in ok),
        "request_tokens_per_s": percentiles(r.tokens_per_s for r in ok),
    }


def flat(summary: dict) -> dict[str, float | None]:
    """`{"ttft": {"p95": x}}` -> `{"ttft_p95": x}`: the names SLO clauses and comparisons use."""
    out: dict[str, float | None] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update({f"{key}_{stat}": v for stat, v in value.items()})
        elif isinstance(value, int | float):
            out[key] = value
    return out


def by_version(records: list[RequestRecord], wall_s: float, objectives: list[Objective] = ()) -> dict[str, dict]:
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in records:
        groups[record.version].append(record)
    return {version: summarize(group, wall_s, objectives) for version, group in sorted(groups.items())}


def timeline(records: list[RequestRecord], t0: float, wall_s: float, buckets: int = 30) -> list[dict]:
    """The run cut into ~`buckets` windows: users, completions, token throughput and latency percentiles.

    Tokens are spread evenly over each request's generation (first token to end), so throughput is drawn when
    it happened rather than piled onto the request's start; latency percentiles group requests by start."""
    width = max(1.0, wall_s / buckets)
    count = max(1, math.ceil(wall_s / width))
    tokens, done, failed = [0.0] * count, [0] * count, [0] * count
    started: list[list[RequestRecord]] = [[] for _ in range(count)]

    def window(t: float) -> int:
        return min(max(int((t - t0) // width), 0), count - 1)

    for record in records:
        end = record.started_at + record.latency_s
        started[window(record.started_at)].append(record)
        (done if record.ok else failed)[window(end)] += 1
        if record.ok and record.output_tokens:
            first = record.started_at + (record.ttft_s or 0.0)
            for index in range(window(first), window(end) + 1):
                lo = t0 + index * width if index else -math.inf  # the edge windows take what lies beyond
                hi = t0 + (index + 1) * width if index < count - 1 else math.inf
                share = (min(hi, end) - max(lo, first)) / (end - first) if end > first else 1.0
                tokens[index] += record.output_tokens * max(share, 0.0)
    rows, users = [], 0
    for index in range(count):
        group = started[index]
        users = max((r.users for r in group), default=users)
        summary = summarize(group, width)
        rows.append({
            "t": (index + 0.5) * width, "users": users, "requests": done[index] + failed[index],
            "errors": failed[index], "request_rate": done[index] / width, "tokens_per_s": tokens[index] / width,
            **{f"{m}_{s}": summary[m][s] for m in ("ttft", "itl", "latency") for s in ("p50", "p95")},
        })  # fmt: skip
    return rows


def stages(records: list[RequestRecord]) -> list[dict]:
    """Requests grouped by the concurrency they started at: the throughput-vs-latency curve of a sweep.

    Rates use the span from the group's first start to its last finish, so each level is timed on its own."""
    groups: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        groups[record.users].append(record)
    rows = []
    for users, group in sorted(groups.items()):
        span = max(r.started_at + r.latency_s for r in group) - min(r.started_at for r in group)
        rows.append({"users": users, **summarize(group, span)})
    return rows


def write_csv(records: list[RequestRecord], path: Path) -> None:
    names = [f.name for f in fields(RequestRecord)] + ["tokens_per_s"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for record in records:
            writer.writerow({**asdict(record), "tokens_per_s": record.tokens_per_s})
