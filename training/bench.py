"""servekit's trainer vs plain PEFT + transformers `Trainer`: same base model, data (tokenized by
`training.data`), LoRA config, batch size, steps, optimizer (AdamW), schedule (linear), clipping and precision.

Each run is its own process so its peak RSS is its own; the runs go one after the other, never together:

    python -m training.bench servekit CONFIG BASE_DIR --steps 12 --out result.json
    python -m training.bench plain    CONFIG BASE_DIR --steps 12 --out result.json
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
import typer

from training.config import TrainConfig, load_config
from training.trainer import uses_bf16

app = typer.Typer(add_completion=False)
WARMUP_STEPS = 1
"""Steps left out of the mean step time (first-step allocations, thread pools)."""


def _servekit(config: TrainConfig, base_path: Path) -> tuple[list[float], float, list[int]]:
    from training import distributed
    from training.data import prepare
    from training.trainer import attach_lora, load_base, train

    ctx = distributed.setup()
    model, tokenizer = load_base(base_path, ctx)
    data = prepare(
        config.dataset, tokenizer, config.max_seq_len, config.truncation_side, config.eval_fraction, config.seed
    )
    result = train(config, attach_lora(model, config), tokenizer, data, ctx, resume=False)
    return result.step_seconds, result.history[-1][1], [len(e.input_ids) for e in data.train]


def _plain(config: TrainConfig, base_path: Path) -> tuple[list[float], float, list[int]]:
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
    return step_seconds, losses[-1], [len(e.input_ids) for e in data.train]


@app.command()
def main(
    trainer: Literal["servekit", "plain"],
    config_file: Path = typer.Argument(..., exists=True, dir_okay=False),
    base_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    steps: int = typer.Option(12),
    out: Path = typer.Option(..., help="Where to write the result JSON."),
    overrides: list[str] = typer.Option([], "--set", help="Config overrides `key=value`, as for `servekit train`."),
) -> None:
    """One timed run of one trainer."""
    with tempfile.TemporaryDirectory() as workdir:
        fixed = [f"max_steps={steps}", f"output_dir={workdir}", f"checkpoint_every={steps + 1}"]
        config = load_config(config_file, [*overrides, *fixed])
        run = _servekit if trainer == "servekit" else _plain
        step_seconds, final_loss, lengths = run(config, base_dir)
    timed = step_seconds[WARMUP_STEPS:] or step_seconds
    step_s = statistics.mean(timed)
    tokens_per_step = statistics.mean(lengths) * config.batch_size * config.grad_accumulation
    result = {
        "trainer": trainer,
        "steps": len(step_seconds),
        "step_s_mean": step_s,
        "step_s_p50": statistics.median(timed),
        "step_s": timed,
        "tokens_per_s": tokens_per_step / step_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": final_loss,
        "precision": "bf16 autocast" if uses_bf16(config, torch.device("cpu")) else "fp32",
    }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
