"""The LoRA training loop.

A hand-written loop rather than `transformers.Trainer`: the contract needs exact control over what a
checkpoint holds (adapter + optimizer + scheduler + RNG + step + loss history, atomically renamed), resuming
mid-epoch with no lost or repeated batch, gloo DDP on CPU, and only rank 0 writing. All of that is ~150 lines
here, against a large API surface whose checkpoint layout and arguments change between transformers majors.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from training import checkpoint, loss
from training.config import TrainConfig
from training.data import Example, PreparedData, collate, labelled_tokens, split_for_passes
from training.distributed import Dist, mean_across

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    history: list[tuple[int, float]]
    resumed_from: int | None
    total_steps: int
    trainable_params: int
    seconds: float
    step_seconds: list[float]
    """Wall time of each optimizer step run here (forward, backward, update; not checkpointing)."""
    loss_positions: str
    """`labelled` (the LM head only where a label is, `training.loss`) or `all` (the model's own loss)."""


def load_base(base_path: Path, ctx: Dist) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """fp32 master weights: LoRA parameters and AdamW state stay exact while bf16 autocast does the
    matmuls (fast on AMX CPUs and on GPUs)."""
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).to(ctx.device)
    return model, tokenizer


def attach_lora(model: torch.nn.Module, config: TrainConfig) -> PeftModel:
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    """`precision: auto` resolved for this device: bf16 only where it is fast."""
    if config.precision != "auto":
        return config.precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


CPU_PASS_TOKENS = 512
"""Padded tokens per forward/backward pass on a CPU under `max_pass_tokens: auto`. Pirate example, 8 x ~70 tokens
per micro-batch: peak RSS 2.8-2.9 GiB in one pass, 1.9 GiB at 512, 1.65 GiB at 256, same step time."""


def pass_tokens(config: TrainConfig, device: torch.device) -> int | None:
    """`max_pass_tokens` resolved for this device: bounded passes on a CPU, whole micro-batches on a GPU."""
    if config.max_pass_tokens == "auto":
        return CPU_PASS_TOKENS if device.type == "cpu" else None
    return config.max_pass_tokens


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[None]:
    if uses_bf16(config, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(
    data: list[Example], config: TrainConfig, ctx: Dist, pad_id: int, start_micro: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches in a seed-determined order per epoch, starting at micro-batch `start_micro`:
    the same sequence as an uninterrupted run, which is what makes resume lose and repeat nothing."""
    sampler = DistributedSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, sampler=sampler, collate_fn=lambda b: collate(b, pad_id))
    per_epoch = len(loader)
    epoch, skip = divmod(start_micro, per_epoch)
    for current in itertools.count(epoch):
        sampler.set_epoch(current)
        yield from itertools.islice(loader, skip if current == epoch else 0, None)


def total_steps(config: TrainConfig, n_train: int, world_size: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    micro_per_epoch = math.ceil(math.ceil(n_train / world_size) / config.batch_size)
    return max(1, config.epochs * micro_per_epoch // config.grad_accumulation)


def _scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    config: TrainConfig,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    ctx: Dist,
    resume: bool,
) -> TrainResult:
    """Runs optimizer steps up to the total, checkpointing every `checkpoint_every` steps and at the end."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    steps = total_steps(config, len(data.train), ctx.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = _scheduler(optimizer, config.warmup_steps, steps)
    state = checkpoint.TrainState(step=0, history=[])
    ckpt_root = config.out / CHECKPOINTS
    found = checkpoint.latest(ckpt_root) if resume else None
    if found is not None:
        state = checkpoint.load(found, model, optimizer, scheduler)
    resumed_from = state.step if found is not None else None

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = _batches(data.train, config, ctx, pad_id, state.step * config.grad_accumulation)
    budget = pass_tokens(config, ctx.device)
    first_pass = split_for_passes(collate(data.train[: config.batch_size], pad_id), budget)[0]
    sample = {k: v.to(ctx.device) for k, v in first_pass.items()}  # checked within the same memory bound
    objective = loss.choose(model, sample)
    wrapped = DistributedDataParallel(objective) if ctx.world_size > 1 else objective
    model.train()
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        disable=not ctx.is_main,
        auto_refresh=False,
    )  # fmt: skip  (redrawn once per step: no refresh thread taking CPU from the training threads)
    clock = time.perf_counter()
    step_seconds: list[float] = []
    with progress:
        task = progress.add_task("train", total=steps, completed=state.step, loss="-")
        while state.step < steps:
            step_started = time.perf_counter()
            step_loss = 0.0
            for micro in range(config.grad_accumulation):
                batch = next(batches)
                labelled = labelled_tokens(batch)
                passes = split_for_passes(batch, budget)
                for index, part in enumerate(passes):
                    last = micro == config.grad_accumulation - 1 and index == len(passes) - 1
                    sync = contextlib.nullcontext() if last or ctx.world_size == 1 else wrapped.no_sync()
                    inputs = {k: v.to(ctx.device) for k, v in part.items()}
                    with sync:
                        with autocast(config, ctx.device):
                            part_loss = wrapped(**inputs, num_items_in_batch=labelled) / config.grad_accumulation
                        part_loss.backward()
                    step_loss += part_loss.item()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.history.append((state.step, mean_across(step_loss, ctx)))
            step_seconds.append(time.perf_counter() - step_started)
            progress.update(task, completed=state.step, loss=f"{state.history[-1][1]:.4f}", refresh=True)
            if ctx.is_main and (state.step % config.checkpoint_every == 0 or state.step == steps):
                checkpoint.save(ckpt_root, model, optimizer, scheduler, state)
            ctx.barrier()
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        history=state.history,
        resumed_from=resumed_from,
        total_steps=steps,
        trainable_params=sum(p.numel() for p in params),
        seconds=time.perf_counter() - clock,
        step_seconds=step_seconds,
        loss_positions="labelled" if isinstance(objective, loss.AssistantTokenLoss) else "all",
    )
