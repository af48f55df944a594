"""What shared state costs per request: one rate-limit admit + settle in this process vs on a local Redis (two
Lua round trips), measured back to back in interleaved rounds. The gateway-level figure (added latency in front
of the echo engine with `state.url` set) belongs beside `router`'s once the pipeline awaits the shared limiter."""

from __future__ import annotations

import asyncio
import time

from loadtest.bench import percentile
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import free_port
from serving.pipeline.limiter import build_rate_limiter
from serving.settings import Settings
from serving.state.limits import AsyncRateLimiter
from serving.state.server import LocalRedis
from serving.state.shared import SharedState

ADDED_P99_GOAL_US = 1000.0
"""The issue's goal for the whole request (≤ 1 ms p99 added); the limiter is most of what shared state adds."""
LIMITS = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}
"""High enough never to refuse: every call charges and settles, nothing short-circuits."""


async def admit_settle_us(limiter: AsyncRateLimiter, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter_ns()
        admission = await limiter.admit("anonymous", lambda: 100)
        await limiter.settle(admission, 90)  # a refund: the settle really runs
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


async def measure(url: str, count: int, rounds: int) -> dict[str, list[float]]:
    local = build_rate_limiter(Settings(limits=LIMITS))
    settings = Settings(limits=LIMITS, state={"url": url})
    shared = SharedState.open(settings.state)
    try:
        remote = build_rate_limiter(settings, shared)
        await admit_settle_us(remote, 100)  # connect and load the scripts outside the measurement
        timings: dict[str, list[float]] = {"in-process": [], "redis": []}
        for _ in range(rounds):
            timings["in-process"] += await admit_settle_us(local, count // rounds)
            timings["redis"] += await admit_settle_us(remote, count // rounds)
        return timings
    finally:
        await shared.close()


def run(ctx: BenchContext) -> SectionResult:
    count, rounds = (300, 3) if ctx.quick else (10_000, 5)
    server = LocalRedis(free_port(), ctx.out)
    server.start()
    try:
        timings = asyncio.run(measure(server.url, count, rounds))
    finally:
        server.stop()
    rows = [
        {"limiter": name, "p50_us": percentile(values, 50), "p99_us": percentile(values, 99), "n": len(values)}
        for name, values in timings.items()
    ]
    local, remote = rows
    added_p99 = remote["p99_us"] - local["p99_us"]
    plot = plots.bars(
        ctx.out / "state.png",
        "Shared state cost: one rate-limit admit + settle, in-process vs a local Redis",
        [("microseconds", {"p50": [r["p50_us"] for r in rows], "p99": [r["p99_us"] for r in rows]},
          [r["limiter"] for r in rows])],
    )  # fmt: skip
    notes = [
        f"Redis adds p50 {remote['p50_us'] - local['p50_us']:.0f} us and p99 {added_p99:.0f} us per request "
        f"(in-process p50 {local['p50_us']:.1f} us); {rounds} interleaved rounds, one client, sequential."
    ]
    target = Target("shared limiter p99 added, us", added_p99, f"<= {ADDED_P99_GOAL_US:g} us",
                    added_p99 <= ADDED_P99_GOAL_US)  # fmt: skip
    return SectionResult("state", rows, [target], [plot], notes)
