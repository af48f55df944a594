"""One fine-tuning run end to end: data -> LoRA training -> evaluation -> adapter + reports on disk.
Both entry points (`python -m training` / torchrun and `servekit train`) call `run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training import distributed, publish, sharding
from training.config import TrainConfig
from training.data import PreparedData, prepare
from training.distributed import Dist
from training.evaluate import evaluate, write_report
from training.trainer import TrainResult, attach_lora, load_base, process_batch, train


def run(config: TrainConfig, base_path: Path, base_tag: str, resume: bool = False) -> dict[str, Any] | None:
    """Trains and writes `config.out`; returns the manifest on rank 0 and None on the other ranks."""
    ctx = distributed.setup(config.parallel)
    try:
        process_batch(config, ctx)  # a world size fsdp cannot split the batch across fails before any loading
        model, tokenizer = load_base(base_path, ctx)
        data = prepare(
            config.dataset, tokenizer, config.max_seq_len, config.truncation_side, config.eval_fraction, config.seed
        )
        peft_model = attach_lora(model, config)
        if ctx.is_main:
            config.out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        result = train(config, peft_model, tokenizer, data, ctx, resume)
        adapter = sharding.full_adapter_state(result.model) if ctx.sharded else None  # collective
        if ctx.is_main:
            result.model.save_pretrained(config.out, state_dict=adapter)  # the same PEFT files either way
        report = _evaluated(result, data, config, ctx)
        if report is None:
            return None
        write_report(config.out, report, result.history)
        training = {
            "steps": result.total_steps,
            "resumed_from_step": result.resumed_from,
            "world_size": ctx.world_size,
            "parallel": ctx.parallel,
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


def _evaluated(result: TrainResult, data: PreparedData, config: TrainConfig, ctx: Dist) -> dict[str, Any] | None:
    """The report on rank 0 (None elsewhere). Rank 0 alone evaluates a whole model; a sharded one is evaluated by
    every rank in step, since each forward pass gathers its layers from all of them."""
    if result.sharded_root is None:
        if not ctx.is_main:
            return None
        return evaluate(result.model, result.tokenizer, data.eval, data.eval_conversations, config)
    with sharding.gathered_root(result.sharded_root):
        report = evaluate(result.model, result.tokenizer, data.eval, data.eval_conversations, config)
    return report if ctx.is_main else None


def summary(manifest: dict[str, Any]) -> str:
    """A few human lines for the end of a run."""
    train_info, evals = manifest["training"], manifest["eval"]
    return json.dumps({"tag": manifest["tag"], "base": manifest["base_model"], **train_info, "eval": evals}, indent=2)
