"""servekit vs the raw vLLM OpenAI server it manages (the same engine process, so identical engine args):
streaming chat at several concurrencies. Goals: >= 0.97x output tok/s and <= 5 ms TTFT p50 overhead."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from loadtest.bench import TargetSummary, compare_gateway
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target

THROUGHPUT_GOAL = 0.97
TTFT_OVERHEAD_GOAL_MS = 5.0


def sweep(ctx: BenchContext) -> tuple[list[int], int, int]:
    """(concurrencies, max_tokens, rounds)."""
    return ([1, 2], 8, 1) if ctx.quick else ([1, 8, 32], 128, 3)


def run(ctx: BenchContext) -> SectionResult:
    url = ctx.session.url()
    concurrencies, max_tokens, rounds = sweep(ctx)
    targets = {"servekit": url, "raw-vllm": ctx.session.raw_url}
    measured: dict[int, dict[str, TargetSummary]] = {}
    for concurrency in concurrencies:
        measured[concurrency] = asyncio.run(
            compare_gateway(
                targets, ctx.session.model, concurrency, max_tokens, rounds,
                requests=max(concurrency, 4), progress=ctx.progress,
            )
        )  # fmt: skip
    rows, checks = [], []
    for concurrency, summaries in measured.items():
        ours, raw = summaries["servekit"], summaries["raw-vllm"]
        rows += [{"concurrency": concurrency, **asdict(s)} for s in (ours, raw)]
        ratio = ours.output_tok_s / raw.output_tok_s
        overhead = ours.ttft_p50_ms - raw.ttft_p50_ms
        checks += [
            Target(
                f"throughput servekit/raw @{concurrency}", ratio, f">= {THROUGHPUT_GOAL}x", ratio >= THROUGHPUT_GOAL
            ),
            Target(
                f"TTFT p50 overhead ms @{concurrency}", overhead, f"<= {TTFT_OVERHEAD_GOAL_MS:g} ms",
                overhead <= TTFT_OVERHEAD_GOAL_MS,
            ),
        ]  # fmt: skip
    xs = [float(c) for c in measured]

    def series(field: str) -> dict[str, list[float]]:
        return {name: [getattr(measured[c][name], field) for c in measured] for name in targets}

    ttft = {f"{name} {q}": values for q in ("p50", "p95") for name, values in series(f"ttft_{q}_ms").items()}
    plot = plots.lines(
        ctx.out / "gateway.png",
        f"servekit vs raw vLLM (same engine), streaming chat, {max_tokens} tokens, {rounds} alternating rounds",
        "concurrent streams",
        [
            ("output tokens/s", xs, series("output_tok_s")),
            ("TTFT ms", xs, ttft),
            ("ITL p50 ms", xs, series("itl_p50_ms")),
        ],
    )
    notes = ["max(c, 4) requests per round at concurrency c; ignore_eos, temperature 0"]
    return SectionResult("gateway", rows, checks, [plot], notes)
