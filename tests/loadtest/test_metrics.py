"""Aggregation of request records: monotone percentiles, rates, goodput, versions, timeline, sweep stages."""

from __future__ import annotations

import csv
import random

import pytest

from loadtest.metrics import RequestRecord, by_version, flat, percentiles, stages, summarize, timeline, write_csv
from loadtest.slo import parse_slo


def record(t: float, ttft: float, users: int = 4, version: str = "v1", ok: bool = True) -> RequestRecord:
    return RequestRecord(
        started_at=t, endpoint="chat-stream", version=version, users=users, ok=ok, status=200 if ok else 503,
        latency_s=ttft + 1.0, ttft_s=ttft if ok else None, itl_s=0.03 if ok else None,
        output_tokens=32 if ok else 0, max_tokens=32, error="" if ok else "HTTP 503",
    )  # fmt: skip


def test_percentiles_are_monotone_and_skip_missing():
    rng = random.Random(7)
    values = [rng.expovariate(3.0) for _ in range(500)] + [None, None]
    stats = percentiles(values)
    assert stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"]
    assert percentiles([None]) == dict.fromkeys(("p50", "p90", "p95", "p99", "mean"))


def test_summary_rates_errors_and_goodput():
    records = [record(100 + i, ttft=0.1 * i) for i in range(10)] + [record(110, 0.0, ok=False)]
    summary = summarize(records, wall_s=10.0, objectives=parse_slo("ttft_p95<0.45s"))
    assert (summary["requests"], summary["ok"], summary["errors"]) == (11, 10, 1)
    assert summary["error_rate"] == 1 / 11
    assert summary["tokens_per_s"] == 32.0
    assert summary["request_rate"] == 1.0
    assert summary["goodput"] == 5 / 11  # ttft 0.0..0.4 meet the SLO; the failed request never does
    assert flat(summary)["ttft_p50"] == summary["ttft"]["p50"]


def test_split_by_version_timeline_and_stages(tmp_path):
    records = [record(100 + i / 2, 0.1, users=1 if i < 10 else 4, version="a" if i % 2 else "b") for i in range(20)]
    assert set(by_version(records, 10.0)) == {"a", "b"}
    assert by_version(records, 10.0)["a"]["requests"] == 10
    rows = timeline(records, t0=100.0, wall_s=10.0, buckets=5)
    assert sum(r["requests"] for r in rows) == 20  # by completion
    assert sum(r["tokens_per_s"] * 2.0 for r in rows) == pytest.approx(20 * 32)  # every token lands in some 2 s window
    assert rows[0]["users"] == 1 and rows[-1]["users"] == 4
    assert [s["users"] for s in stages(records)] == [1, 4]
    write_csv(records, tmp_path / "requests.csv")
    with (tmp_path / "requests.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and rows[0]["version"] == "b" and float(rows[0]["tokens_per_s"]) > 0
