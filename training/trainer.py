"""The LoRA training loop.

A hand-written loop rather than `transformers.Trainer`: the contract needs exact control over what a
checkpoint holds (adapter + optimizer + scheduler + RNG + step + loss history, atomically renamed), resuming
mid-epoch with no lost or repeated batch, gloo DDP or FSDP on CPU, and only rank 0 writing the adapter. All of
that is ~150 lines here, against a large API surface whose checkpoint layout and arguments change between
transformers majors.
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
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from training import checkpoint, loss, sharding
from training.config import TrainConfig
from training.data import Example, PreparedData, collate, labelled_tokens, split_for_passes
from training.distributed import Dist, ParallelError, mean_across, sum_across

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
    sharded_root: torch.nn.Module | None = None
    """Under fsdp, the FSDP root holding `model`: code that calls `model` directly gathers through it."""


def load_base(base_path: Path, ctx: Dist) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """fp32 master weights: LoRA parameters and AdamW state stay exact while bf16 autocast does the
    matmuls (fast on AMX CPUs and on GPUs). Under fsdp the base stays in host memory: `fully_shard` moves only
    this process's slice of it onto the device."""
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    return (model if ctx.sharded else model.to(ctx.device)), tokenizer


def attach_lora(model: torch.nn.Module, config: TrainConfig) -> PeftModel:
    """Seeded, so a recipe starts from the same adapter in every run and on every rank (FSDP keeps each rank's
    own slice of its own copy, so the copies must agree)."""
    torch.manual_seed(config.seed)
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


def process_batch(config: TrainConfig, ctx: Dist) -> int:
    """Rows of a micro-batch in this process: `batch_size`, or under fsdp this rank's even share of it, so that
    N ranks together take exactly the batches one process would (same recipe, same version id)."""
    if not ctx.sharded:
        return config.batch_size
    if config.batch_size % ctx.world_size:
        raise ParallelError(
            f"parallel: fsdp splits batch_size (the global micro-batch) evenly across the {ctx.world_size} "
            f"processes, and {ctx.world_size} does not divide {config.batch_size}: make batch_size a multiple of "
            "the world size"
        )
    return config.batch_size // ctx.world_size


def _batches(
    data: list[Example], config: TrainConfig, ctx: Dist, pad_id: int, start_micro: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches in a seed-determined order per epoch, starting at micro-batch `start_micro`:
    the same sequence as an uninterrupted run, which is what makes resume lose and repeat nothing."""
    sampler = DistributedSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed)
    rows = process_batch(config, ctx)
    loader = DataLoader(data, batch_size=rows, sampler=sampler, collate_fn=lambda b: collate(b, pad_id))
    per_epoch = len(loader)
    epoch, skip = divmod(start_micro, per_epoch)
    for current in itertools.count(epoch):
        sampler.set_epoch(current)
        yield from itertools.islice(loader, skip if current == epoch else 0, None)


def total_steps(config: TrainConfig, n_train: int, ctx: Dist) -> int:
    if config.max_steps is not None:
        return config.max_steps
    micro_per_epoch = math.ceil(math.ceil(n_train / ctx.world_size) / process_batch(config, ctx))
    return max(1, config.epochs * micro_per_epoch // config.grad_accumulation)


def _scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


def _parallelize(objective: torch.nn.Module, model: PeftModel, ctx: Dist) -> torch.nn.Module:
    if ctx.sharded:
        return sharding.shard(objective, model, ctx)
    return DistributedDataParallel(objective) if ctx.world_size > 1 else objective


def _restore(found: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
             ctx: Dist) -> checkpoint.TrainState:  # fmt: skip
    if ctx.sharded:
        return checkpoint.load_sharded(found, model, optimizer, scheduler, ctx)
    return checkpoint.load(found, model, optimizer, scheduler)


def _save(root: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
          state: checkpoint.TrainState, ctx: Dist) -> None:  # fmt: skip
    """Every rank writes its shards under fsdp; otherwise rank 0 writes the whole (replicated) adapter."""
    if ctx.sharded:
        checkpoint.save_sharded(root, model, optimizer, scheduler, state, ctx)
    elif ctx.is_main:
        checkpoint.save(root, model, optimizer, scheduler, state)


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
    steps = total_steps(config, len(data.train), ctx)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    budget = pass_tokens(config, ctx.device)
    first_pass = split_for_passes(collate(data.train[: process_batch(config, ctx)], pad_id), budget)[0]
    on_model = next(model.parameters()).device  # the host under fsdp, until sharding moves the slices
    sample = {k: v.to(on_model) for k, v in first_pass.items()}  # checked within the same memory bound
    objective = loss.choose(model, sample)
    wrapped = _parallelize(objective, model, ctx)
    params = [p for p in model.parameters() if p.requires_grad]  # after sharding: FSDP replaces the parameters
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = _scheduler(optimizer, config.warmup_steps, steps)
    state = checkpoint.TrainState(step=0, history=[])
    ckpt_root = config.out / CHECKPOINTS
    found = checkpoint.latest(ckpt_root) if resume else None
    if found is not None:
        state = _restore(found, model, optimizer, scheduler, ctx)
    resumed_from = state.step if found is not None else None
    batches = _batches(data.train, config, ctx, pad_id, state.step * config.grad_accumulation)
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
                # Every rank's loss is its share of the global micro-batch's labelled tokens, times the world
                # size that DDP and FSDP divide the summed gradients by: N ranks learn what one process learns.
                labelled = int(sum_across(labelled_tokens(batch), ctx))
                weight = ctx.world_size / config.grad_accumulation
                passes = split_for_passes(batch, budget)
                for index, part in enumerate(passes):
                    last = micro == config.grad_accumulation - 1 and index == len(passes) - 1
                    replicated = isinstance(wrapped, DistributedDataParallel)
                    sync = wrapped.no_sync() if replicated and not last else contextlib.nullcontext()
                    inputs = {k: v.to(ctx.device) for k, v in part.items()}
                    with sync:
                        with autocast(config, ctx.device):
                            part_loss = wrapped(**inputs, num_items_in_batch=labelled) * weight
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
            if state.step % config.checkpoint_every == 0 or state.step == steps:
                _save(ckpt_root, model, optimizer, scheduler, state, ctx)
            ctx.barrier()
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        history=state.history,
        resumed_from=resumed_from,
        total_steps=steps,
        trainable_params=sum(p.numel() for p in params),  # a DTensor's numel is the whole tensor's
        seconds=time.perf_counter() - clock,
        step_seconds=step_seconds,
        loss_positions="labelled" if isinstance(objective, loss.AssistantTokenLoss) else "all",
        sharded_root=wrapped if ctx.sharded else None,
    )
