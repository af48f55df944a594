"""Multi-LoRA cost: the base alone vs requests spread over 4 adapters on the same engine (goal >= 0.6x) vs one
adapter merged into the base and served as a base of its own (goal >= 0.95x). All three through servekit, in
alternating rounds at the same load; the merged model runs on a second servekit with its own engine."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import bentoml
import httpx

from loadtest.bench import TargetSummary, run_rounds, summaries
from serving.bench import plots
from serving.bench.adapters import build_random_adapter
from serving.bench.section import BenchContext, SectionResult, Target
from serving.bench.session import free_port, start_gateway, stop_gateway, wait_ready
from serving.registry.adapters import import_adapter, merge_adapter
from serving.registry.store import RegisteredModel, get_model, import_directory

MIXED_GOAL = 0.6
MERGED_GOAL = 0.95
ADAPTERS = 4
RANK = 8


def register_adapters(base: RegisteredModel, workdir: Path, rank: int) -> list[RegisteredModel]:
    return [
        import_adapter(
            build_random_adapter(base.path, workdir / f"r{rank}-{i}", rank, seed=i), f"bench-adapter-r{rank}-{i}", base
        )[0]
        for i in range(ADAPTERS)
    ]


def register_merged(base: RegisteredModel, adapter: RegisteredModel, workdir: Path) -> RegisteredModel:
    merged = merge_adapter(base.path, adapter.path, workdir / "merged")
    labels = {"kind": "merged", "base": base.tag}
    manifest = {"kind": "merged", "name": "bench-merged", "base_model": base.tag, "adapter": adapter.tag}
    return import_directory("bench-merged", adapter.tag.split(":")[1], merged, labels, manifest)


KNOBS: tuple[tuple[str, dict[str, str], int], ...] = (
    ("vLLM defaults (all layers, rank 16)",
     {"SERVEKIT_ENGINE__LORA_TARGET_MODULES": "null", "SERVEKIT_ENGINE__MAX_LORA_RANK": "16"}, RANK),
    ("rank-16 adapters", {"SERVEKIT_ENGINE__MAX_LORA_RANK": "16"}, 16),
    ("max_loras=2, max_cpu_loras=2", {"SERVEKIT_ENGINE__MAX_LORAS": "2", "SERVEKIT_ENGINE__MAX_CPU_LORAS": "2"}, RANK),
)  # fmt: skip
"""Engine knobs tried on the same load (full mode only, one engine start each): (label, settings, adapter rank)."""


@contextlib.contextmanager
def side_servekit(ctx: BenchContext, name: str, env: dict[str, str | None]) -> Iterator[str]:
    """Another servekit with its own engine and home (the shared one idles meanwhile); yields its URL."""
    log = ctx.out / f"{name}.log"
    env = {"SERVEKIT_ENGINE__URL": None, "SERVEKIT_ENGINE__PORT": str(free_port()),
           "SERVEKIT_HOME": str(ctx.out / f"{name}-home"), **env}  # fmt: skip
    process, url = start_gateway(env, log)
    try:
        wait_ready(process, url, log)
        yield url
    finally:
        stop_gateway(process)


def run(ctx: BenchContext) -> SectionResult:
    concurrency, max_tokens, rounds = (2, 8, 1) if ctx.quick else (32, 128, 2)
    base = get_model(ctx.settings.model.name, ctx.settings.model.version)
    url = ctx.session.url()
    created: list[RegisteredModel] = []
    knob_summaries: list[TargetSummary] = []
    with tempfile.TemporaryDirectory(prefix="servekit-bench-lora-") as tmp:
        try:
            adapters = register_adapters(base, Path(tmp), RANK)
            created += adapters
            for adapter in adapters:
                ctx.session.admin("POST", f"/admin/models/{adapter.tag}/load")
            merged = register_merged(base, adapters[0], Path(tmp))
            created.append(merged)
            merged_env = {"SERVEKIT_MODEL__NAME": "bench-merged", "SERVEKIT_MODEL__VERSION": merged.tag.split(":")[1],
                          "SERVEKIT_ENGINE__ENABLE_LORA": "false"}  # fmt: skip
            with side_servekit(ctx, "merged", merged_env) as merged_url:
                measured = summaries(asyncio.run(
                    run_rounds(
                        {"base": url, f"{ADAPTERS} adapters": url, "merged": merged_url},
                        base.name, concurrency, max_tokens, rounds, progress=ctx.progress,
                        models={f"{ADAPTERS} adapters": [a.tag for a in adapters], "merged": "bench-merged"},
                    )
                ))  # fmt: skip
            for label, env, rank in () if ctx.quick else KNOBS:
                tried = adapters if rank == RANK else register_adapters(base, Path(tmp), rank)
                created += [a for a in tried if a not in created]
                with side_servekit(ctx, re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-"), env) as knob_url:
                    for adapter in tried:
                        httpx.post(f"{knob_url}/admin/models/{adapter.tag}/load", timeout=300).raise_for_status()
                    knob_summaries += summaries(asyncio.run(
                        run_rounds(
                            {f"base, {label}": knob_url, f"{ADAPTERS} adapters, {label}": knob_url}, base.name,
                            concurrency, max_tokens, 1, progress=ctx.progress,
                            models={f"{ADAPTERS} adapters, {label}": [a.tag for a in tried]},
                        )
                    )).values()  # fmt: skip
        finally:
            for model in created:
                if model.labels.get("kind") == "adapter":
                    with contextlib.suppress(httpx.HTTPError):
                        ctx.session.admin("POST", f"/admin/models/{model.tag}/unload")
                bentoml.models.delete(model.tag)
    base_s, mixed_s, merged_s = measured.values()
    mixed, merged_ratio = mixed_s.output_tok_s / base_s.output_tok_s, merged_s.output_tok_s / base_s.output_tok_s
    rows = [asdict(s) for s in [*measured.values(), *knob_summaries]]
    panels = [
        ("output tokens/s", {"tok/s": [s.output_tok_s for s in measured.values()]}, list(measured)),
        ("TTFT ms", {"p50": [s.ttft_p50_ms for s in measured.values()],
                     "p95": [s.ttft_p95_ms for s in measured.values()]}, list(measured)),
    ]  # fmt: skip
    if knob_summaries:
        pairs = [(base_s, mixed_s), *zip(knob_summaries[::2], knob_summaries[1::2], strict=True)]
        groups = ["servekit defaults", *(b.name.removeprefix("base, ") for b, _ in pairs[1:])]
        panels.insert(1, (
            "output tokens/s (engine knobs)",
            {"base": [b.output_tok_s for b, _ in pairs], f"{ADAPTERS} adapters": [m.output_tok_s for _, m in pairs]},
            [textwrap.fill(g, 15) for g in groups],
        ))  # fmt: skip
    plot = plots.bars(
        ctx.out / "lora.png",
        f"Multi-LoRA: {concurrency} streams x {max_tokens} tokens, rank-{RANK} adapters on q/k/v/o",
        panels,
        caption=f"{ADAPTERS} adapters / base = {mixed:.2f}x (goal >= {MIXED_GOAL}), "
        f"merged / base = {merged_ratio:.2f}x (goal >= {MERGED_GOAL})",
    )
    targets = [
        Target(f"{ADAPTERS} adapters mixed / base (tok/s)", mixed, f">= {MIXED_GOAL}x", mixed >= MIXED_GOAL),
        Target("merged / base (tok/s)", merged_ratio, f">= {MERGED_GOAL}x", merged_ratio >= MERGED_GOAL),
    ]
    s = ctx.settings.engine
    notes = [
        f"engine: max_loras={s.max_loras}, max_lora_rank={s.max_lora_rank}, max_cpu_loras={s.max_cpu_loras}, "
        f"lora_target_modules={s.lora_target_modules}; "
        "request i goes to adapter i mod 4, so every batch mixes all four",
        "the merged model is served as the base of a second servekit (its own vLLM engine, LoRA off); the first "
        "engine idles meanwhile",
    ]
    return SectionResult("lora", rows, targets, [plot], notes)
