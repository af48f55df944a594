"""The soak harness: its verdict arithmetic, and a short real soak against the session server."""

from __future__ import annotations

import asyncio
import json

from loadtest.soak import P95_DRIFT_LIMIT, RSS_GROWTH_LIMIT, Sample, SoakReport, soak, verdict, write


def sample(t: float, rss: float, p95: float) -> Sample:
    return Sample(t_s=t, rss_mib=rss, requests=10, errors=0, latency_p95_ms=p95, ttft_p95_ms=p95 / 4)


def test_verdict_skips_warm_up_and_compares_thirds():
    flat = SoakReport("u", "m", 4, 60, [sample(0, 100, 900)] + [sample(t, 300 + t / 100, 500) for t in range(1, 10)])
    verdict(flat)
    assert flat.passed and 0 < flat.rss_growth < 0.05 and flat.p95_drift == 1.0
    leaking = SoakReport("u", "m", 4, 60, [sample(t, 300 + 10 * t, 500) for t in range(10)])
    verdict(leaking)
    assert not leaking.passed and leaking.rss_growth > 0.05
    slowing = SoakReport("u", "m", 4, 60, [sample(t, 300, 500 + 100 * t) for t in range(10)])
    verdict(slowing)
    assert not slowing.passed and slowing.p95_drift > 1.25


def test_short_soak_against_the_real_server_passes_its_verdict(server, tmp_path):
    """The gateway holds its memory and its latency under steady load: RSS growth and p95 drift within the
    limits `servekit soak` enforces, over enough intervals for the thirds to be medians of several."""
    report = asyncio.run(soak(server.base_url, "smollm2-135m-instruct", 30, 2, 8, 3.0))
    assert len(report.samples) >= 7
    assert all(s.rss_mib > 50 and s.errors == 0 and s.requests > 0 for s in report.samples)
    assert report.rss_growth < RSS_GROWTH_LIMIT, [s.rss_mib for s in report.samples]
    assert report.p95_drift <= P95_DRIFT_LIMIT, [s.latency_p95_ms for s in report.samples]
    assert report.passed
    write(report, tmp_path)
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["samples"][0]["rss_mib"] == report.samples[0].rss_mib
    assert (tmp_path / "soak.png").stat().st_size > 20_000
