"""Multi-LoRA cost: the base alone vs requests spread over 4 adapters on the same engine (goal >= 0.6x) vs one
adapter merged into the base and served as a base of its own (goal >= 0.95x). All three through servekit, in
alternating rounds at the same load; the merged model runs on a second servekit with its own engine."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import asdict
from pathlib import Path

import bentoml

from loadtest.bench import compare_gateway
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


def register_adapters(base: RegisteredModel, workdir: Path) -> list[RegisteredModel]:
    return [
        import_adapter(build_random_adapter(base.path, workdir / f"a{i}", RANK, seed=i), f"bench-adapter-{i}", base)[0]
        for i in range(ADAPTERS)
    ]


def register_merged(base: RegisteredModel, adapter: RegisteredModel, workdir: Path) -> RegisteredModel:
    merged = merge_adapter(base.path, adapter.path, workdir / "merged")
    labels = {"kind": "merged", "base": base.tag}
    manifest = {"kind": "merged", "name": "bench-merged", "base_model": base.tag, "adapter": adapter.tag}
    return import_directory("bench-merged", adapter.tag.split(":")[1], merged, labels, manifest)


def run(ctx: BenchContext) -> SectionResult:
    concurrency, max_tokens, rounds = (2, 8, 1) if ctx.quick else (16, 64, 3)
    base = get_model(ctx.settings.model.name, ctx.settings.model.version)
    url = ctx.session.url()
    created: list[RegisteredModel] = []
    merged_server = None
    with tempfile.TemporaryDirectory(prefix="servekit-bench-lora-") as tmp:
        try:
            adapters = register_adapters(base, Path(tmp))
            created += adapters
            for adapter in adapters:
                ctx.session.admin("POST", f"/admin/models/{adapter.tag}/load")
            merged = register_merged(base, adapters[0], Path(tmp))
            created.append(merged)
            log = ctx.out / "merged-servekit.log"
            merged_server, merged_url = start_gateway(
                {"SERVEKIT_MODEL__NAME": "bench-merged", "SERVEKIT_MODEL__VERSION": merged.tag.split(":")[1],
                 "SERVEKIT_ENGINE__URL": None, "SERVEKIT_ENGINE__PORT": str(free_port()),
                 "SERVEKIT_ENGINE__ENABLE_LORA": "false", "SERVEKIT_HOME": str(ctx.out / "merged-home")},
                log,
            )  # fmt: skip
            wait_ready(merged_server, merged_url, log)
            summaries = asyncio.run(
                compare_gateway(
                    {"base": url, f"{ADAPTERS} adapters": url, "merged": merged_url},
                    base.name, concurrency, max_tokens, rounds, progress=ctx.progress,
                    models={f"{ADAPTERS} adapters": [a.tag for a in adapters], "merged": "bench-merged"},
                )
            )  # fmt: skip
        finally:
            if merged_server is not None:
                stop_gateway(merged_server)
            for model in created:
                if model.labels.get("kind") == "adapter":
                    ctx.session.admin("POST", f"/admin/models/{model.tag}/unload")
                bentoml.models.delete(model.tag)
    base_s, mixed_s, merged_s = summaries.values()
    mixed, merged_ratio = mixed_s.output_tok_s / base_s.output_tok_s, merged_s.output_tok_s / base_s.output_tok_s
    rows = [asdict(s) for s in summaries.values()]
    plot = plots.bars(
        ctx.out / "lora.png",
        f"Multi-LoRA: {concurrency} streams x {max_tokens} tokens, rank-{RANK} adapters on q/k/v/o",
        [
            ("output tokens/s", {"tok/s": [s.output_tok_s for s in summaries.values()]}, list(summaries)),
            ("TTFT ms", {"p50": [s.ttft_p50_ms for s in summaries.values()],
                         "p95": [s.ttft_p95_ms for s in summaries.values()]}, list(summaries)),
        ],
        caption=f"{ADAPTERS} adapters / base = {mixed:.2f}x (goal >= {MIXED_GOAL}), "
        f"merged / base = {merged_ratio:.2f}x (goal >= {MERGED_GOAL})",
    )  # fmt: skip
    targets = [
        Target(f"{ADAPTERS} adapters mixed / base (tok/s)", mixed, f">= {MIXED_GOAL}x", mixed >= MIXED_GOAL),
        Target("merged / base (tok/s)", merged_ratio, f">= {MERGED_GOAL}x", merged_ratio >= MERGED_GOAL),
    ]
    s = ctx.settings.engine
    notes = [
        f"engine: max_loras={s.max_loras}, max_lora_rank={s.max_lora_rank}, max_cpu_loras={s.max_cpu_loras}; "
        "request i goes to adapter i mod 4, so every batch mixes all four",
        "the merged model is served as the base of a second servekit (its own vLLM engine, LoRA off); the first "
        "engine idles meanwhile",
    ]
    return SectionResult("lora", rows, targets, [plot], notes)
