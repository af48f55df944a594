"""One fine-tuning run end to end: data -> LoRA training -> evaluation -> adapter + reports on disk.
Both entry points (`python -m training` / torchrun and `servekit train`) call `run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training import distributed, publish
from training.config import TrainConfig
from training.data import prepare
from training.evaluate import evaluate, write_report
from training.trainer import attach_lora, load_base, train


def run(config: TrainConfig, base_path: Path, base_tag: str, resume: bool = False) -> dict[str, Any] | None:
    """Trains and writes `config.out`; returns the manifest on rank 0 and None on the other ranks."""
    ctx = distributed.setup()
    try:
        model, tokenizer = load_base(base_path, ctx)
        data = prepare(
            config.dataset, tokenizer, config.max_seq_len, config.truncation_side, config.eval_fraction, config.seed
        )
        peft_model = attach_lora(model, config)
        if ctx.is_main:
            config.out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        result = train(config, peft_model, tokenizer, data, ctx, resume)
        if not ctx.is_main:
            return None
        result.model.save_pretrained(config.out)
        report = evaluate(result.model, tokenizer, data.eval, data.eval_conversations, config)
        write_report(config.out, report, result.history)
        training = {
            "steps": result.total_steps,
            "resumed_from_step": result.resumed_from,
            "world_size": ctx.world_size,
            "train_examples": len(data.train),
            "dropped_examples": data.dropped,
            "trainable_params": result.trainable_params,
            "loss_positions": result.loss_positions,
            "seconds": round(result.seconds, 2),
            "loss_first": result.history[0][1],
            "loss_last": result.history[-1][1],
        }
        manifest = publish.build_manifest(config, base_tag, data.sha256, report, training)
        publish.write_manifest(config.out, manifest)
        return manifest
    finally:
        distributed.teardown()


def summary(manifest: dict[str, Any]) -> str:
    """A few human lines for the end of a run."""
    train_info, evals = manifest["training"], manifest["eval"]
    return json.dumps({"tag": manifest["tag"], "base": manifest["base_model"], **train_info, "eval": evals}, indent=2)
