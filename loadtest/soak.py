"""Soak test: steady streaming load for a long time while the gateway's memory (RSS, from its own /metrics:
`process_resident_memory_bytes`) and latency percentiles are sampled per interval. HTTP only.

Verdict: RSS growth < 5 % (mean of the last third of the samples vs the first third; the first interval is
warm-up and left out) and a flat p95 (last third's median p95 within 1.25x of the first third's)."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from loadtest.bench import percentile, prompts
from loadtest.stream_client import StreamResult, auth_headers, stream_chat

RSS_SERIES = re.compile(r"^process_resident_memory_bytes\s+([0-9.e+]+)$", re.MULTILINE)
RSS_GROWTH_LIMIT = 0.05
P95_DRIFT_LIMIT = 1.25


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    requests: int
    errors: int
    latency_p95_ms: float
    ttft_p95_ms: float


@dataclass
class SoakReport:
    url: str
    model: str
    concurrency: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    rss_growth: float = 0.0
    p95_drift: float = 0.0
    passed: bool = False


async def gateway_rss_mib(client: httpx.AsyncClient, url: str) -> float:
    match = RSS_SERIES.search((await client.get(f"{url}/metrics")).text)
    if match is None:
        raise RuntimeError(f"{url}/metrics has no process_resident_memory_bytes")
    return float(match[1]) / 2**20


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last third of `values` (at least one value each)."""
    third = max(1, len(values) // 3)
    return statistics.mean(values[:third]), statistics.mean(values[-third:])


def verdict(report: SoakReport) -> None:
    steady = report.samples[1:] if len(report.samples) > 2 else report.samples
    first_rss, last_rss = thirds([s.rss_mib for s in steady])
    report.rss_growth = last_rss / first_rss - 1
    p95s = [s.latency_p95_ms for s in steady if s.requests]
    third = max(1, len(p95s) // 3)
    report.p95_drift = statistics.median(p95s[-third:]) / statistics.median(p95s[:third]) if p95s else float("nan")
    report.passed = report.rss_growth < RSS_GROWTH_LIMIT and report.p95_drift <= P95_DRIFT_LIMIT


async def soak(
    url: str, model: str, seconds: float, concurrency: int, max_tokens: int, interval_s: float, on_sample=None
) -> SoakReport:
    """`concurrency` clients stream back to back for `seconds`; one Sample per `interval_s`."""
    report = SoakReport(url, model, concurrency, seconds)
    finished: list[StreamResult] = []
    deadline = time.monotonic() + seconds
    texts = prompts(64)
    limits = httpx.Limits(max_connections=concurrency + 2)
    timeout = httpx.Timeout(600.0, connect=5.0)
    async with httpx.AsyncClient(headers=auth_headers(), timeout=timeout, limits=limits) as client:

        async def worker(index: int) -> None:
            turn = index
            while time.monotonic() < deadline:
                finished.append(await stream_chat(client, url, model, texts[turn % len(texts)], max_tokens))
                turn += concurrency

        async def sampler() -> None:
            started = time.monotonic()
            while time.monotonic() < deadline:
                await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
                batch, finished[:] = list(finished), []
                ok = [r for r in batch if r.ok]
                sample = Sample(
                    t_s=round(time.monotonic() - started, 1),
                    rss_mib=round(await gateway_rss_mib(client, url), 1),
                    requests=len(batch),
                    errors=len(batch) - len(ok),
                    latency_p95_ms=1000 * percentile([r.latency_s for r in ok], 95) if ok else float("nan"),
                    ttft_p95_ms=1000 * percentile([r.ttft_s for r in ok if r.ttft_s is not None], 95)
                    if ok else float("nan"),
                )  # fmt: skip
                report.samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)

        await asyncio.gather(sampler(), *(worker(i) for i in range(concurrency)))
    verdict(report)
    return report


def write(report: SoakReport, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(asdict(report), indent=2))
    ts = [s.t_s for s in report.samples]
    fig, (rss, p95) = plt.subplots(1, 2, figsize=(12, 4.2))
    rss.plot(ts, [s.rss_mib for s in report.samples], marker="o", color="#3b7dd8")
    rss.set_title(f"gateway RSS (growth {100 * report.rss_growth:+.1f} %, limit {100 * RSS_GROWTH_LIMIT:.0f} %)")
    rss.set_ylabel("MiB")
    p95.plot(ts, [s.latency_p95_ms for s in report.samples], marker="o", label="latency p95", color="#e07b39")
    p95.plot(ts, [s.ttft_p95_ms for s in report.samples], marker="o", label="TTFT p95", color="#4caf50")
    p95.set_title(f"p95 per interval (drift {report.p95_drift:.2f}x, limit {P95_DRIFT_LIMIT}x)")
    p95.set_ylabel("ms")
    p95.legend()
    for axis in (rss, p95):
        axis.set_xlabel("seconds into the soak")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    verdict_text = "PASS" if report.passed else "FAIL"
    fig.suptitle(f"soak {verdict_text}: {report.concurrency} streams for {report.seconds / 60:.1f} min, {report.url}")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=110)
    plt.close(fig)
