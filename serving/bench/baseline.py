"""servekit (vLLM: continuous batching) vs what a user gets without a server: Hugging Face transformers
`generate` on the same model and prompts, one request after another. Goal: >= 15x output tok/s at 32 streams.
Run back to back, never at the same time (they share the CPU)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import fields

from loadtest.bench import TargetSummary, prompts, run_rounds, summaries
from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.hardware import cpu_dtype
from serving.registry.store import get_model

GOAL = 15.0
CONCURRENCY = 32


def hf_sequential(ctx: BenchContext, count: int, max_tokens: int, dtype: str) -> dict[str, float]:
    """Greedy `generate` of exactly `max_tokens` new tokens per prompt (as `ignore_eos` does for the server)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = ctx.settings.model
    path = get_model(settings.name, settings.version).path
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    task = ctx.progress.add_task("baseline: transformers generate", total=count)
    generated, started = 0, time.perf_counter()
    for prompt in prompts(count):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
        generated += out.shape[1] - ids["input_ids"].shape[1]
        ctx.progress.advance(task)
    wall = time.perf_counter() - started
    ctx.progress.remove_task(task)
    torch.set_num_threads(previous_threads)
    return {"requests": count, "output_tokens": generated, "wall_s": wall, "output_tok_s": generated / wall}


def servekit_at(ctx: BenchContext, concurrency: int, max_tokens: int) -> TargetSummary:
    """Reuse the gateway section's measurement at this concurrency when it ran in this invocation (its rows
    carry more columns than a summary: only the summary's are taken)."""
    earlier = ctx.results.get("gateway")
    for row in earlier.rows if earlier else ():
        if row["concurrency"] == concurrency and row["name"] == "servekit" and not ctx.quick:
            return TargetSummary(**{column.name: row[column.name] for column in fields(TargetSummary)})
    measured = asyncio.run(
        run_rounds(
            {"servekit": ctx.session.url()}, ctx.session.model, concurrency, max_tokens, rounds=1, progress=ctx.progress
        )
    )
    return summaries(measured)["servekit"]


def run(ctx: BenchContext) -> SectionResult:
    concurrency, count, max_tokens = (2, 1, 8) if ctx.quick else (CONCURRENCY, 4, 128)
    ours = servekit_at(ctx, concurrency, max_tokens)
    dtype = cpu_dtype(ctx.settings.engine.dtype)  # the engine's: same arithmetic on both sides
    naive = hf_sequential(ctx, count, max_tokens, dtype)
    ratio = ours.output_tok_s / naive["output_tok_s"]
    rows = [
        {"target": f"servekit @{concurrency} streams", "output_tok_s": ours.output_tok_s, "requests": ours.requests},
        {"target": "transformers generate, sequential", "output_tok_s": naive["output_tok_s"], "requests": count},
    ]
    plot = plots.bars(
        ctx.out / "baseline.png",
        f"servekit vs sequential transformers generate ({max_tokens} new tokens per request)",
        [("output tokens/s", {"output tok/s": [r["output_tok_s"] for r in rows]}, ["servekit", "transformers"])],
        caption=f"servekit / transformers = {ratio:.1f}x (goal >= {GOAL:g}x)",
    )
    target = Target(f"output tok/s servekit @{concurrency} / transformers", ratio, f">= {GOAL:g}x", ratio >= GOAL)
    notes = [f"transformers: {dtype}, greedy, all cores, one at a time"]
    return SectionResult("baseline", rows, [target], [plot], notes)
