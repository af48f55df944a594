"""`servekit bench shadow`: what shadowing costs the primary. Three gateways in front of the same instant echo
engine (`loadtest.fake_server`), the candidate on a second echo engine; one shadows nothing, one 25 % of its
route's users, one 100 %. Streaming rounds alternate between them. Goal: TTFT p50 overhead on the primary at
25 % <= 1 ms (median over pairs); tok/s and TTFT p95 reported for all three. The echo engines answer at once,
so any difference is the gateway's own work: the copies it sends, pairs and compares."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

import httpx

from loadtest.bench import Paired, run_rounds, summarise
from serving.bench import plots
from serving.bench.router import start_echo
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import start_gateway, stop_gateway, wait_ready

OVERHEAD_GOAL_MS = 1.0
ROUTE = "shadowed"
CANDIDATE = "candidate"
SETTINGS = {"off": None, "shadow 25%": 25.0, "shadow 100%": 100.0}


def run(ctx: BenchContext) -> SectionResult:
    concurrency, rounds, tokens = (4, 2, 8) if ctx.quick else (8, 8, 16)
    model = ctx.settings.model.name
    primary, primary_url = start_echo(ctx.out)
    (ctx.out / "candidate").mkdir(exist_ok=True)
    candidate, candidate_url = start_echo(ctx.out / "candidate")
    gateways: dict[str, tuple[object, str]] = {}
    try:
        for name, percent in SETTINGS.items():
            slug = name.replace(" ", "-").replace("%", "")
            env = {
                "SERVEKIT_ENGINE__URL": primary_url,
                "SERVEKIT_HOME": str(ctx.out / slug),
                "SERVEKIT_VERSIONS": json.dumps([{"name": CANDIDATE, "model": model, "urls": [candidate_url]}]),
                "SERVEKIT_ROUTES": json.dumps({ROUTE: {model: 100}}),
            }
            process, url = start_gateway(env, ctx.out / f"{slug}.log")
            gateways[name] = (process, url)
            wait_ready(process, url, ctx.out / f"{slug}.log", timeout_s=120)
            if percent is not None:
                body = {"candidate": CANDIDATE, "percent": percent, "max_in_flight": 4 * concurrency}
                httpx.post(f"{url}/admin/shadows/{ROUTE}", json=body, timeout=60).raise_for_status()
        targets = {name: url for name, (_, url) in gateways.items()}
        measured = asyncio.run(
            run_rounds(targets, ROUTE, concurrency, tokens, rounds, requests=4 * concurrency, progress=ctx.progress)
        )
        copies = {
            name: httpx.get(f"{url}/admin/shadows/{ROUTE}", timeout=30).json()
            for name, url in targets.items()
            if SETTINGS[name] is not None
        }
    finally:
        for process, _ in gateways.values():
            stop_gateway(process)
        for echo in (primary, candidate):
            echo.terminate()
            echo.wait()
    rows = [asdict(summarise(name, rounds_of)) for name, rounds_of in measured.items()]
    paired = {name: Paired.of(measured[name], measured["off"]) for name in measured if name != "off"}
    overhead = paired["shadow 25%"].ttft_p50_overhead_ms
    targets_met = [
        Target("TTFT p50 overhead at 25 % (ms, median of pairs)", overhead, f"<= {OVERHEAD_GOAL_MS:g} ms",
               overhead <= OVERHEAD_GOAL_MS),
    ]  # fmt: skip
    names = list(measured)
    overheads = [pair.ttft_p50_overhead_ms for pair in paired.values()]
    plot = plots.bars(
        ctx.out / "shadow.png",
        f"The primary with shadowing off / 25 % / 100 % (echo engines, {concurrency} streams, {tokens} tokens)",
        [
            ("TTFT ms", {q: [r[f"ttft_{q}_ms"] for r in rows] for q in ("p50", "p95")}, names),
            ("output tokens/s", {"tok/s": [r["output_tok_s"] for r in rows]}, names),
            ("TTFT p50 overhead vs off, ms", {"median of pairs": [0.0, *overheads]}, names),
        ],
    )  # fmt: skip
    notes = [
        f"{name}: {run['mirrored']} copies sent, dropped {run['dropped']}, pairs {run['comparison']['pairs']}"
        for name, run in copies.items()
    ]
    return SectionResult("shadow", rows, targets_met, [plot], notes)
