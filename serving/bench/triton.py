"""Triton: dynamic batching vs batching off (max_batch_size 1; goal >= 4x req/s), then Triton vs vLLM on the same
model and the same load (output tok/s, TTFT). Engine level on both sides: Triton over its gRPC stream, vLLM over
its OpenAI HTTP stream, one after the other (never at the same time)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from loadtest.bench import TargetSummary, run_rounds, summaries
from serving.backends.triton.backend import TritonBackend
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.registry.store import get_model
from serving.settings import Settings, TritonSettings

BATCHING_GOAL = 4.0
TOPICS = ("the ocean", "a lighthouse", "bread baking", "the moon", "mountain trails", "a library", "old trains")


async def _one(backend: TritonBackend, prompt: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat request; exactly `max_tokens` tokens (`ignore_eos`) so every request does equal work."""
    started = time.perf_counter()
    payload = {
        "model": backend.served_name,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    stream = await backend.open_stream("chat/completions", payload)
    token_times = []
    async for data in stream:
        if b'"content":"' in data and b'"content":""' not in data:
            token_times.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(token_times)]
    return {"ttft_s": token_times[0] - started, "per_token_s": statistics.mean(gaps) if gaps else 0.0}


async def _measure(
    settings: TritonSettings, model_path: Path, name: str, clients: int, requests: int, max_tokens: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="servekit-triton-bench-") as workdir:
        log_path = Path(tempfile.gettempdir()) / f"servekit-triton-bench-{settings.max_batch_size}.log"
        backend = TritonBackend(settings, model_path, name, log_path, Path(workdir))
        started = time.perf_counter()
        await backend.start()
        while not await backend.is_healthy():
            if backend.exited():
                raise RuntimeError(f"tritonserver exited:\n{backend.log_tail()}")
            await asyncio.sleep(0.2)
        ready_s = time.perf_counter() - started
        try:
            await _one(backend, "Say hello.", 4)
            prompts = [f"Write a long story about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(clients * requests)]
            queue: asyncio.Queue[str] = asyncio.Queue()
            for prompt in prompts:
                queue.put_nowait(prompt)
            results: list[dict[str, float]] = []

            async def client() -> None:
                while not queue.empty():
                    results.append(await _one(backend, queue.get_nowait(), max_tokens))

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall_s = time.perf_counter() - started
            stats = await backend.settled_statistics(len(prompts) + 1)
        finally:
            await backend.stop()
    ttfts = sorted(r["ttft_s"] for r in results)
    return {
        "max_batch_size": settings.max_batch_size,
        "ready_s": round(ready_s, 2),
        "req_s": round(len(results) / wall_s, 3),
        "output_tok_s": round(len(results) * max_tokens / wall_s, 1),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 3),
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.95))], 3),
        "per_token_ms": round(1000 * statistics.mean(r["per_token_s"] for r in results), 1),
        "requests": int(stats["inference_count"]),
        "executions": int(stats["execution_count"]),
    }


async def _measure_all(
    settings: Settings, model_path: Path, sizes: tuple[int, ...], clients: int, requests: int, max_tokens: int
) -> list[dict[str, float]]:
    """Both runs in one event loop: grpc.aio keeps process-wide state tied to the loop it first ran in."""
    return [
        await _measure(
            settings.triton.model_copy(update={"max_batch_size": size}),
            model_path,
            settings.model.name,
            clients,
            requests,
            max_tokens,
        )
        for size in sizes
    ]


def run(ctx: BenchContext) -> SectionResult:
    clients, requests, max_tokens = (2, 1, 4) if ctx.quick else (8, 4, 32)
    settings = ctx.settings
    model_path = get_model(settings.model.name, settings.model.version).path
    task = ctx.progress.add_task("triton: batching on, off", total=None)
    triton_runs = asyncio.run(_measure_all(settings, model_path, (8, 1), clients, requests, max_tokens))
    ctx.progress.remove_task(task)
    vllm = _vllm(ctx, clients, requests, max_tokens)
    rows = [{"engine": f"triton max_batch_size={r.pop('max_batch_size')}", **r} for r in [dict(r) for r in triton_runs]]
    rows.append({
        "engine": "vllm", "ready_s": None, "req_s": round(vllm.req_s, 3), "output_tok_s": round(vllm.output_tok_s, 1),
        "ttft_p50_s": round(vllm.ttft_p50_ms / 1000, 3), "ttft_p95_s": round(vllm.ttft_p95_ms / 1000, 3),
        "per_token_ms": round(vllm.itl_p50_ms, 1), "requests": vllm.requests, "executions": None,
    })  # fmt: skip
    batched, single = triton_runs
    speedup = batched["req_s"] / single["req_s"]
    names = ["Triton batched", "Triton batch 1", "vLLM"]
    plot = plots.bars(
        ctx.out / "triton.png",
        f"Triton (dynamic batching on/off) vs vLLM: {clients} clients x {requests} requests x {max_tokens} tokens",
        [
            ("requests/s", {"req/s": [r["req_s"] for r in rows]}, names),
            ("output tokens/s", {"tok/s": [r["output_tok_s"] for r in rows]}, names),
            ("TTFT s", {"p50": [r["ttft_p50_s"] for r in rows], "p95": [r["ttft_p95_s"] for r in rows]}, names),
        ],
        caption=f"dynamic batching speed-up {speedup:.1f}x req/s (goal >= {BATCHING_GOAL:g}x); "
        f"vLLM / Triton batched = {vllm.output_tok_s / batched['output_tok_s']:.1f}x tok/s",
    )
    targets = [Target("Triton dynamic batching / batch 1 (req/s)", speedup, f">= {BATCHING_GOAL:g}x", speedup >= 4)]
    notes = [
        "Triton runs transformers in its Python backend (CPU, bfloat16 where native, else float32) and batches "
        "whole requests; vLLM batches per token step (continuous batching) with paged attention",
        "executions < requests in the batched run is Triton's own evidence that requests were batched",
    ]
    return SectionResult("triton", rows, targets, [plot], notes)


def _vllm(ctx: BenchContext, clients: int, requests: int, max_tokens: int) -> TargetSummary:
    measured = asyncio.run(
        run_rounds(
            {"vllm": ctx.session.raw_url}, ctx.session.model, clients, max_tokens, rounds=1,
            requests=clients * requests, progress=ctx.progress,
        )
    )  # fmt: skip
    return summaries(measured)["vllm"]
