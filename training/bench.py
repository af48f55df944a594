"""servekit's trainer vs plain PEFT + transformers `Trainer`: same base model, data (tokenized by
`training.data`), LoRA config, batch size, steps, optimizer (AdamW), schedule (linear), clipping and precision.

Each run is its own process so its peak RSS is its own; the runs go one after the other, never together:

    python -m training.bench servekit CONFIG BASE_DIR --steps 12 --out result.json
    python -m training.bench plain    CONFIG BASE_DIR --steps 12 --out result.json

Under torchrun the servekit trainer runs as DDP or FSDP (`--set parallel=...`) and rank 0 writes every rank's
parameter memory and peak RSS:

    torchrun --nproc_per_node 2 -m training.bench servekit CONFIG BASE_DIR --set parallel=fsdp --out result.json
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import typer

from training import distributed
from training.config import TrainConfig, load_config
from training.sharding import local_parameter_bytes
from training.trainer import uses_bf16

app = typer.Typer(add_completion=False)
WARMUP_STEPS = 1
"""Steps left out of the mean step time (first-step allocations, thread pools)."""
MIB = 1024 * 1024


@dataclass
class Measured:
    step_seconds: list[float]
    final_loss: float
    lengths: list[int]
    """Token count of every training example."""
    parameter_bytes: int
    """Parameters this process holds after wrapping: a shard of each under FSDP, all of them otherwise."""


def _servekit(config: TrainConfig, base_path: Path) -> Measured:
    from training.data import prepare
    from training.trainer import attach_lora, load_base, train

    ctx = distributed.setup(config.parallel)
    model, tokenizer = load_base(base_path, ctx)
    data = prepare(
        config.dataset, tokenizer, config.max_seq_len, config.truncation_side, config.eval_fraction, config.seed
    )
    result = train(config, attach_lora(model, config), tokenizer, data, ctx, resume=False)
    lengths = [len(e.input_ids) for e in data.train]
    return Measured(result.step_seconds, result.history[-1][1], lengths, local_parameter_bytes(result.model))


def _plain(config: TrainConfig, base_path: Path) -> Measured:
    """What a user writes without servekit: get_peft_model + Trainer with the matching arguments."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from training.data import collate, prepare

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    data = prepare(
        config.dataset, tokenizer, config.max_seq_len, config.truncation_side, config.eval_fraction, config.seed
    )
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lora = LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, task_type="CAUSAL_LM",
    )  # fmt: skip
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    step_seconds: list[float] = []

    class StepTimer(TrainerCallback):
        started = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            step_seconds.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=config.max_steps or 1, per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accumulation, learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps, lr_scheduler_type="linear", optim="adamw_torch", max_grad_norm=1.0,
            bf16=uses_bf16(config, torch.device("cpu")), use_cpu=True, save_strategy="no", logging_steps=1,
            report_to=[], seed=config.seed, remove_unused_columns=False, disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(
            model=get_peft_model(model, lora), args=args, train_dataset=data.train,
            data_collator=lambda batch: collate(batch, pad_id), callbacks=[StepTimer()],
        )  # fmt: skip
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    lengths = [len(e.input_ids) for e in data.train]
    return Measured(step_seconds, losses[-1], lengths, local_parameter_bytes(trainer.model))


def _per_rank(value: float) -> list[float]:
    """Every rank's value, in rank order (just this one's outside torchrun)."""
    if not dist.is_initialized():
        return [value]
    values: list[float] = [0.0] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


@app.command()
def main(
    trainer: Literal["servekit", "plain"],
    config_file: Path = typer.Argument(..., exists=True, dir_okay=False),
    base_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    steps: int = typer.Option(12),
    out: Path = typer.Option(..., help="Where to write the result JSON."),
    overrides: list[str] = typer.Option([], "--set", help="Config overrides `key=value`, as for `servekit train`."),
) -> None:
    """One timed run of one trainer (of every rank under torchrun)."""
    workdir = out.with_name(f"{out.stem}-run")  # the same on every rank: the final checkpoint is one directory
    fixed = [f"max_steps={steps}", f"output_dir={workdir}", f"checkpoint_every={steps + 1}"]
    config = load_config(config_file, [*overrides, *fixed])
    run = _servekit if trainer == "servekit" else _plain
    measured = run(config, base_dir)
    parameter_mib = _per_rank(measured.parameter_bytes / MIB)
    peak_rss_mib = _per_rank(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    world_size, rank = len(parameter_mib), dist.get_rank() if dist.is_initialized() else 0
    distributed.teardown()
    if rank != 0:
        return
    shutil.rmtree(workdir, ignore_errors=True)
    timed = measured.step_seconds[WARMUP_STEPS:] or measured.step_seconds
    step_s = statistics.mean(timed)
    parallel = distributed.resolve(config.parallel, world_size)
    global_batch = config.batch_size * (1 if parallel == "fsdp" else world_size)
    tokens_per_step = statistics.mean(measured.lengths) * global_batch * config.grad_accumulation
    result = {
        "trainer": trainer if world_size == 1 else f"{trainer}-{parallel}",
        "world_size": world_size,
        "steps": len(measured.step_seconds),
        "step_s_mean": step_s,
        "step_s_p50": statistics.median(timed),
        "step_s": timed,
        "tokens_per_s": tokens_per_step / step_s,
        "parameter_mib": max(parameter_mib),
        "parameter_mib_per_rank": parameter_mib,
        "peak_rss_mib": max(peak_rss_mib),
        "peak_rss_mib_per_rank": peak_rss_mib,
        "final_loss": measured.final_loss,
        "precision": "bf16 autocast" if uses_bf16(config, torch.device("cpu")) else "fp32",
    }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
