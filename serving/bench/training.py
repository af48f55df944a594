"""servekit's LoRA trainer vs plain PEFT + transformers Trainer on the pirate example: step time, tokens/s and
peak RSS, each trainer in its own process, one after the other (`training.bench`); then servekit under torchrun
with 2 processes, DDP vs FSDP on the same global batch: parameter memory and peak RSS per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving.bench import plots
from serving.bench.section import BenchContext, SectionResult, Target
from serving.registry.store import get_model

EXAMPLE = Path(__file__).resolve().parents[2] / "training" / "examples" / "pirate.yaml"
TRAINERS = ("servekit", "plain")
LABELS = {"servekit": "servekit trainer", "plain": "PEFT + HF Trainer"}
GOAL = 1.0
"""servekit's trainer must be at least as fast and as lean as plain PEFT + Trainer on the same work."""
PROCESSES = 2
PARALLEL = {"ddp": ["batch_size=4"], "fsdp": []}
"""Global micro-batch 8 either way: DDP's batch_size is per process (4 x 2), FSDP's is global (8, split 4 + 4)."""
SHARDED_GOAL = 0.6
"""FSDP at 2 processes: parameter memory per process at most 0.6x DDP's (the frozen base is split in two)."""


def _measure(ctx: BenchContext, name: str, command: list[str]) -> dict:
    """One run of `training.bench` (or torchrun of it) writing `<name>.json` and `<name>.log` in the section's
    directory."""
    out = ctx.out / f"{name}.json"
    with (ctx.out / f"{name}.log").open("wb") as log:
        subprocess.run([*command, "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads(out.read_text())


def _ranks(row: dict) -> str:
    return " / ".join(f"{value:.0f}" for value in row["peak_rss_mib_per_rank"])


def run(ctx: BenchContext) -> SectionResult:
    steps = 3 if ctx.quick else 20
    base = get_model(ctx.settings.model.name, ctx.settings.model.version)
    rows, spreads = [], []
    task = ctx.progress.add_task(f"training: {steps} steps each", total=len(TRAINERS) + len(PARALLEL))
    bench = ["-m", "training.bench"]
    for trainer in TRAINERS:
        result = _measure(ctx, trainer, [sys.executable, *bench, trainer, str(EXAMPLE), str(base.path), "--steps",
                                         str(steps)])  # fmt: skip
        timed = result["step_s"]
        spreads.append(f"{trainer} {min(timed):.2f} / {result['step_s_p50']:.2f} / {max(timed):.2f}")
        rows.append({k: v for k, v in result.items() if k != "step_s"})  # every step's time stays in <trainer>.json
        ctx.progress.advance(task)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES)]
    for mode, sets in PARALLEL.items():
        overrides = [arg for item in [f"parallel={mode}", *sets] for arg in ("--set", item)]
        result = _measure(ctx, f"servekit-{mode}", [*torchrun, *bench, "servekit", str(EXAMPLE), str(base.path),
                                                    "--steps", str(steps), *overrides])  # fmt: skip
        rows.append({k: v for k, v in result.items() if k != "step_s"})
        ctx.progress.advance(task)
    ctx.progress.remove_task(task)
    ours, plain, ddp, fsdp = rows
    ratio = ours["step_s_p50"] / plain["step_s_p50"]  # the median: one step slowed by a neighbour skews a mean
    rss_ratio = ours["peak_rss_mib"] / plain["peak_rss_mib"]
    pair = (ours, plain)
    names = [LABELS[r["trainer"]] for r in pair]
    plot = plots.bars(
        ctx.out / "training.png",
        f"LoRA fine-tuning, pirate example: {steps} steps, batch 8, seq <= 128, {ours['precision']}",
        [
            ("median step time, s", {"s": [r["step_s_p50"] for r in pair]}, names),
            ("tokens/s", {"tok/s": [r["tokens_per_s"] for r in pair]}, names),
            ("peak RSS, MiB", {"MiB": [r["peak_rss_mib"] for r in pair]}, names),
        ],
        caption=f"servekit / plain: median step time {ratio:.2f}x, peak RSS {rss_ratio:.2f}x",
    )
    parameter_ratio = fsdp["parameter_mib"] / ddp["parameter_mib"]
    sharded_rss_ratio = fsdp["peak_rss_mib"] / ddp["peak_rss_mib"]
    parallel_names = [f"{mode} x{PROCESSES}" for mode in PARALLEL]
    parallel_plot = plots.bars(
        ctx.out / "training-parallel.png",
        f"LoRA fine-tuning, {PROCESSES} processes (gloo), global batch 8: DDP vs FSDP, per process (the larger rank)",
        [
            ("parameters, MiB", {"MiB": [r["parameter_mib"] for r in (ddp, fsdp)]}, parallel_names),
            ("peak RSS, MiB", {"MiB": [r["peak_rss_mib"] for r in (ddp, fsdp)]}, parallel_names),
            ("median step time, s", {"s": [r["step_s_p50"] for r in (ddp, fsdp)]}, parallel_names),
        ],
        caption=f"FSDP / DDP per process: parameters {parameter_ratio:.2f}x, peak RSS {sharded_rss_ratio:.2f}x",
    )
    targets = [
        Target("median step time servekit / plain Trainer", ratio, f"<= {GOAL:.1f}x", ratio <= GOAL),
        Target("peak RSS servekit / plain Trainer", rss_ratio, f"<= {GOAL:.1f}x", rss_ratio <= GOAL),
        Target(f"parameter memory per process FSDP / DDP at {PROCESSES} processes", parameter_ratio,
               f"<= {SHARDED_GOAL:.1f}x", parameter_ratio <= SHARDED_GOAL),
    ]  # fmt: skip
    notes = [
        "same tokenized data, LoRA r=8 on q/k/v/o, AdamW, linear schedule, clip 1.0; first step left out of the mean",
        "each trainer shuffles with its own sampler, so the batches (and their padded widths) differ between the two",
        "servekit runs the LM head only at labelled (assistant) positions (training/loss.py); Trainer at every one",
        "servekit runs a micro-batch over 512 padded tokens as several passes, same gradient (max_pass_tokens)",
        "tokens/s = mean example length x batch size / mean step time",
        f"DDP vs FSDP: {PROCESSES} processes each, global batch 8 (DDP batch_size 4 per process, FSDP batch_size 8 "
        "split across them); parameters = bytes of this process's parameters after wrapping (its local shard of "
        "each DTensor under FSDP), peak RSS includes loading the whole base before sharding",
        f"peak RSS per process FSDP / DDP: {sharded_rss_ratio:.2f}x (per rank, MiB: DDP {_ranks(ddp)}, FSDP "
        f"{_ranks(fsdp)})",
        "step time min / median / max, s: " + "; ".join(spreads),
    ]
    return SectionResult("training", rows, targets, [plot, parallel_plot], notes)
