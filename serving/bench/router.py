"""What routing costs: the A/B decision in-process (goal p99 <= 50 us), and the whole gateway's added latency
in front of a trivial echo engine (`loadtest.fake_server`), where any time beyond the direct call is servekit's."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loadtest.bench import percentile, run_rounds, summaries
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import free_port, start_gateway, stop_gateway, wait_ready
from serving.router.assign import choose_version
from serving.router.routes import Route, RouteMember

DECISION_GOAL_US = 50.0
ECHO_TOKENS = 16


def decision_timings(members: int, decisions: int) -> list[float]:
    route = Route(name="r", members=[RouteMember(version=f"v{i}:abc", weight=100 / members) for i in range(members)])
    timings = []
    for i in range(decisions):
        key = f"user-{i}"
        started = time.perf_counter_ns()
        choose_version(route, key)
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def start_echo(log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "loadtest.fake_server", "--port", str(port), "--tokens", str(ECHO_TOKENS)]
    with (log_dir / "echo.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/health", timeout=1.0)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the echo engine did not start")


def sequential_latencies_ms(url: str, model: str, count: int, headers: dict[str, str] | None = None) -> list[float]:
    body = {"model": model, "messages": [{"role": "user", "content": "echo"}], "max_tokens": 4}
    latencies = []
    with httpx.Client(timeout=30.0, headers=headers) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
            latencies.append(1000 * (time.perf_counter() - started))
    return latencies


def run(ctx: BenchContext) -> SectionResult:
    decisions, calls, rounds = (2_000, 20, 1) if ctx.quick else (100_000, 500, 3)
    rows, targets = [], []
    for members in (2, 4):
        timings = decision_timings(members, decisions)
        p50, p99 = percentile(timings, 50), percentile(timings, 99)
        rows.append({"measure": f"A/B decision, {members} versions (us)", "p50": p50, "p99": p99, "n": decisions})
        targets.append(Target(f"decision p99 us, {members} versions", p99, f"<= {DECISION_GOAL_US:g} us", p99 <= 50))
    echo, echo_url = start_echo(ctx.out)
    gateway = None
    try:
        env = {"SERVEKIT_ENGINE__URL": echo_url, "SERVEKIT_HOME": str(ctx.out / "home")}  # no routes, no adapters
        gateway, url = start_gateway(env, ctx.out / "gateway.log")
        wait_ready(gateway, url, ctx.out / "gateway.log", timeout_s=120)
        model = ctx.settings.model.name
        direct = sequential_latencies_ms(echo_url, model, calls)
        through = sequential_latencies_ms(url, model, calls)
        added = [
            statistics.median(through) - statistics.median(direct),
            percentile(through, 99) - percentile(direct, 99),
        ]
        rows.append({"measure": "added latency, non-streaming (ms)", "p50": added[0], "p99": added[1], "n": calls})
        for concurrency in (1, 8):
            measured = summaries(asyncio.run(
                run_rounds(
                    {"servekit": url, "echo": echo_url}, model, concurrency, ECHO_TOKENS, rounds,
                    requests=max(4 * concurrency, 20), progress=ctx.progress,
                )
            ))  # fmt: skip
            ours, raw = measured["servekit"], measured["echo"]
            rows.append({
                "measure": f"added TTFT, streaming @{concurrency} (ms)",
                "p50": ours.ttft_p50_ms - raw.ttft_p50_ms, "p99": ours.ttft_p95_ms - raw.ttft_p95_ms,
                "n": ours.requests,
            })  # fmt: skip
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        echo.terminate()
        echo.wait()
    plot = plots.bars(
        ctx.out / "router.png",
        "Routing cost: A/B decision in-process, and servekit in front of an instant echo engine",
        [
            ("decision time, us", {"p50": [r["p50"] for r in rows[:2]], "p99": [r["p99"] for r in rows[:2]]},
             ["2 versions", "4 versions"]),
            ("added ms vs calling the echo engine directly",
             {"p50": [r["p50"] for r in rows[2:]], "p99 (TTFT: p95)": [r["p99"] for r in rows[2:]]},
             ["non-stream", "TTFT @1", "TTFT @8"]),
        ],
    )  # fmt: skip
    notes = ["the TTFT rows' p99 column holds p95 (fewer samples)"]
    return SectionResult("router", rows, targets, [plot], notes)
