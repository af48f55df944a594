"""`servekit bench capacity`: the default model's capacity knee on this machine (the `servekit capacity` sweep),
then the same overload, Poisson arrivals at twice the knee's request rate, against two gateways in front of the
one engine: degradation ladder off vs on, alternating rounds. Goals: goodput (requests meeting the SLO per
second) with the ladder at least 1.5x without it; TTFT p95 of the requests it admitted within the SLO.
(`--quick` runs the same steps against an instant echo engine: it proves the mechanics, its numbers mean
nothing.)

Open loop on purpose: real overload is more arrivals than the engine finishes, so without a ladder the queue and
every admitted request's TTFT grow for as long as it lasts (closed-loop users would slow down with the server)."""

from __future__ import annotations

import json
import statistics
import subprocess
from dataclasses import replace

from loadtest.capacity import Point, knee
from loadtest.sweep import SweepConfig, measure, sweep
from serving.bench import plots
from serving.bench.router import start_echo
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import start_gateway, stop_gateway, wait_ready

TTFT_SLO_S = 0.5
SLO = f"ttft_p95<{TTFT_SLO_S:g}s,itl_p95<100ms"
MAX_TOKENS = 64
CAPPED_TOKENS = 16
GOODPUT_GOAL = 1.5


def ladder(knee_users: int) -> list[dict[str, object]]:
    """Shorter answers from three quarters of the knee's concurrency in flight, shedding beyond the knee."""
    return [
        {"action": "cap_tokens", "signal": "in_flight", "over": max(1, round(0.75 * knee_users)), "enter_s": 0.5,
         "exit_s": 3, "max_tokens": CAPPED_TOKENS},
        {"action": "shed_all", "signal": "in_flight", "over": knee_users, "enter_s": 0.5, "exit_s": 3},
    ]  # fmt: skip


def run(ctx: BenchContext) -> SectionResult:
    model = ctx.settings.model.name
    duration_s, max_users, rounds, tokens = (3.0, 2, 1, 8) if ctx.quick else (30.0, 16, 2, MAX_TOKENS)
    echo = None
    if ctx.quick:  # a smoke run proves the mechanics against an instant echo engine, not a busy real one
        echo, engine_url = start_echo(ctx.out)
    else:
        engine_url = ctx.session.raw_url
    gateways: dict[str, tuple[subprocess.Popen, str]] = {}
    points: dict[str, list[Point]] = {"ladder off": [], "ladder on": []}

    def start(name: str, extra: dict[str, str]) -> str:
        slug = name.replace(" ", "-")
        env = {"SERVEKIT_ENGINE__URL": engine_url, "SERVEKIT_HOME": str(ctx.out / slug),
               "SERVEKIT_DEGRADE_INTERVAL_S": "0.5", **extra}  # fmt: skip
        gateways[name] = start_gateway(env, ctx.out / f"{slug}.log")
        wait_ready(*gateways[name], ctx.out / f"{slug}.log", timeout_s=120)
        return gateways[name][1]

    try:
        base = SweepConfig(
            url=start("ladder off", {}), model=model, slo=SLO, out=ctx.out / "profile", max_tokens=str(tokens),
            duration_s=duration_s, max_concurrency=max_users, open_loop=False,
        )  # fmt: skip
        profiled = sweep(base, lambda point: ctx.progress.console.print(f"capacity: {point.describe()}"))
        found = knee(profiled)
        knee_users = found.concurrency if found else 1
        overload = 2 * (found.request_rate if found else min(p.request_rate for p in profiled))
        start("ladder on", {"SERVEKIT_DEGRADE": json.dumps({model: ladder(knee_users)})})
        for round_no in range(rounds):
            for name in list(points) if round_no % 2 == 0 else list(reversed(points)):
                out = ctx.out / f"round-{round_no}-{name.replace(' ', '-')}"
                points[name].append(measure(replace(base, url=gateways[name][1], out=out), "open", 4 * knee_users,
                                            overload))  # fmt: skip
    finally:
        for process, _ in gateways.values():
            stop_gateway(process)
        if echo is not None:
            echo.terminate()
            echo.wait()
    rows = [_row(name, measured) for name, measured in points.items()]
    off, on = rows
    ratio = on["goodput_rate"] / off["goodput_rate"] if off["goodput_rate"] else float("inf")
    targets = [
        Target(f"goodput ladder on / off at {overload:.2f} req/s (2x knee)", ratio, f">= {GOODPUT_GOAL}x",
               ratio >= GOODPUT_GOAL),
        Target("TTFT p95 of admitted requests, ladder on (s)", on["ttft_p95_s"], f"<= {TTFT_SLO_S:g} s",
               on["ttft_p95_s"] <= TTFT_SLO_S),
    ]  # fmt: skip
    plot = plots.bars(
        ctx.out / "capacity.png",
        f"2x overload ({overload:.2f} req/s Poisson; knee {knee_users} users), ladder off vs on, SLO {SLO}",
        [
            ("good requests/s", {"goodput": [r["goodput_rate"] for r in rows]}, list(points)),
            ("TTFT p95 of admitted, s", {"ttft p95": [r["ttft_p95_s"] for r in rows]}, list(points)),
            ("error (shed) rate", {"errors": [r["error_rate"] for r in rows]}, list(points)),
        ],
    )
    notes = [
        f"knee: {found.describe() if found else 'no level met the SLO; 1 user assumed'}",
        f"ladder on: cap max_tokens {MAX_TOKENS} -> {CAPPED_TOKENS} over {ladder(knee_users)[0]['over']} in flight, "
        f"shed all over {knee_users}; medians over {rounds} alternating rounds of {duration_s:g} s",
    ]
    rows = [{"knee_users": knee_users, "offered_rate": overload, **row} for row in rows]
    return SectionResult("capacity", rows, targets, [plot], notes)


def _row(name: str, measured: list[Point]) -> dict[str, object]:
    def median(values: list[float | None]) -> float:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else float("nan")

    return {
        "ladder": name,
        "goodput_rate": median([p.goodput_rate for p in measured]),
        "request_rate": median([p.request_rate for p in measured]),
        "ttft_p95_s": median([p.ttft_p95 for p in measured]),
        "error_rate": median([p.error_rate for p in measured]),
    }
