"""servekit's LoRA trainer vs plain PEFT + transformers Trainer on the pirate example: step time, tokens/s and
peak RSS, each trainer in its own process, one after the other (`training.bench`)."""

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


def run(ctx: BenchContext) -> SectionResult:
    steps = 3 if ctx.quick else 20
    base = get_model(ctx.settings.model.name, ctx.settings.model.version)
    rows, spreads = [], []
    task = ctx.progress.add_task(f"training: {steps} steps each", total=len(TRAINERS))
    for trainer in TRAINERS:
        out = ctx.out / f"{trainer}.json"
        command = [
            sys.executable, "-m", "training.bench", trainer, str(EXAMPLE), str(base.path), "--steps", str(steps),
            "--out", str(out),
        ]  # fmt: skip
        with (ctx.out / f"{trainer}.log").open("wb") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        result = json.loads(out.read_text())
        timed = result["step_s"]
        spreads.append(f"{trainer} {min(timed):.2f} / {result['step_s_p50']:.2f} / {max(timed):.2f}")
        rows.append({k: v for k, v in result.items() if k != "step_s"})  # every step's time stays in <trainer>.json
        ctx.progress.advance(task)
    ctx.progress.remove_task(task)
    ours, plain = rows
    ratio = ours["step_s_p50"] / plain["step_s_p50"]  # the median: one step slowed by a neighbour skews a mean
    rss_ratio = ours["peak_rss_mib"] / plain["peak_rss_mib"]
    names = [LABELS[r["trainer"]] for r in rows]
    plot = plots.bars(
        ctx.out / "training.png",
        f"LoRA fine-tuning, pirate example: {steps} steps, batch 8, seq <= 128, {ours['precision']}",
        [
            ("median step time, s", {"s": [r["step_s_p50"] for r in rows]}, names),
            ("tokens/s", {"tok/s": [r["tokens_per_s"] for r in rows]}, names),
            ("peak RSS, MiB", {"MiB": [r["peak_rss_mib"] for r in rows]}, names),
        ],
        caption=f"servekit / plain: median step time {ratio:.2f}x, peak RSS {rss_ratio:.2f}x",
    )
    targets = [
        Target("median step time servekit / plain Trainer", ratio, f"<= {GOAL:.1f}x", ratio <= GOAL),
        Target("peak RSS servekit / plain Trainer", rss_ratio, f"<= {GOAL:.1f}x", rss_ratio <= GOAL),
    ]
    notes = [
        "same tokenized data, LoRA r=8 on q/k/v/o, AdamW, linear schedule, clip 1.0; first step left out of the mean",
        "each trainer shuffles with its own sampler, so the batches (and their padded widths) differ between the two",
        "servekit runs the LM head only at labelled (assistant) positions (training/loss.py); Trainer at every one",
        "servekit runs a micro-batch over 512 padded tokens as several passes, same gradient (max_pass_tokens)",
        "tokens/s = mean example length x batch size / mean step time",
        "step time min / median / max, s: " + "; ".join(spreads),
    ]
    return SectionResult("training", rows, targets, [plot], notes)
