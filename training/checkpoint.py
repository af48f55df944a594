"""Resumable checkpoints: adapter weights, optimizer, scheduler, every RNG, the step and the loss history.

Each one is written to a temporary directory and renamed into place, so a process killed mid-write never
leaves a checkpoint that looks complete; resume picks the highest complete step. One process (or DDP's rank 0)
writes a PEFT adapter plus a state file; under FSDP every rank writes its shards (`save_sharded`)."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from training.distributed import Dist

STATE_FILE = "trainer_state.pt"
ADAPTER_FILE = "adapter_model.safetensors"
PREFIX = "step-"
KEEP = 2
SHARDED = StateDictOptions(ignore_frozen_params=True, strict=False)
"""Sharded checkpoints hold only what training changes: the frozen base is the registry's, not the run's. Not
strict, so loading leaves the base alone; a trainable weight missing from the checkpoint still fails in DCP."""


@dataclass
class TrainState:
    step: int
    history: list[tuple[int, float]]


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainer_state(scheduler: Any, state: TrainState, rng: Any) -> dict[str, Any]:
    return {"step": state.step, "history": state.history, "scheduler": scheduler.state_dict(), "rng": rng}


def _publish(root: Path, partial: Path, final: Path) -> Path:
    """The rename that makes a checkpoint exist, then the pruning of all but the newest KEEP."""
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-KEEP]:
        shutil.rmtree(old)
    return final


def _paths(root: Path, step: int) -> tuple[Path, Path]:
    return root / f".partial-{step:06d}", root / f"{PREFIX}{step:06d}"


def save(root: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState) -> Path:
    """Writes `root/step-NNNNNN` and keeps only the newest KEEP checkpoints (one process: rank 0)."""
    partial, final = _paths(root, state.step)
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    saved = {**_trainer_state(scheduler, state, _rng_state()), "optimizer": optimizer.state_dict()}
    torch.save(saved, partial / STATE_FILE)
    return _publish(root, partial, final)


def save_sharded(root: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                 state: TrainState, ctx: Dist) -> Path:  # fmt: skip
    """Collective (FSDP): every rank writes its shards of the adapter and the AdamW state as one distributed
    checkpoint (`torch.distributed.checkpoint`; on several machines `root` must be a shared filesystem), then
    rank 0 adds the trainer state with every rank's RNG and renames, so the checkpoint appears whole or not at
    all."""
    partial, final = _paths(root, state.step)
    if ctx.is_main:
        shutil.rmtree(partial, ignore_errors=True)
    ctx.barrier()
    dcp.save(_sharded_state(model, optimizer), checkpoint_id=partial)
    rngs: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(rngs, _rng_state())
    if ctx.is_main:
        torch.save(_trainer_state(scheduler, state, rngs), partial / STATE_FILE)
        _publish(root, partial, final)
    ctx.barrier()
    return final


def _sharded_state(model: PeftModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """This rank's shards of the trainable weights and their optimizer state, keyed by parameter name."""
    weights, moments = get_state_dict(model, optimizer, options=SHARDED)
    return {"model": weights, "optimizer": moments}


def latest(root: Path) -> Path | None:
    found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def _read_state(path: Path) -> dict[str, Any]:
    # Our own file, written by `save` or `save_sharded`: it holds Python RNG tuples, so the full unpickler is needed.
    return torch.load(path / STATE_FILE, weights_only=False)


def _restored(saved: dict[str, Any], scheduler: Any, rng: dict[str, Any]) -> TrainState:
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(rng)
    return TrainState(step=saved["step"], history=[tuple(item) for item in saved["history"]])


def load(path: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState:
    """Restores everything `save` wrote into live objects; returns the step to continue after."""
    if not (path / ADAPTER_FILE).is_file():
        raise ValueError(f"{path} holds FSDP shards; resume it with parallel: fsdp on the world size that wrote it")
    set_peft_model_state_dict(model, load_file(str(path / ADAPTER_FILE)))
    saved = _read_state(path)
    optimizer.load_state_dict(saved["optimizer"])
    return _restored(saved, scheduler, saved["rng"])


def load_sharded(path: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                 ctx: Dist) -> TrainState:  # fmt: skip
    """Collective: what `save_sharded` wrote, back into this rank's shards, on the world size that wrote it."""
    saved = _read_state(path)
    if not isinstance(saved["rng"], list):
        raise ValueError(f"{path} is a whole-adapter checkpoint (parallel: none or ddp); resume it that way")
    if len(saved["rng"]) != ctx.world_size:
        raise ValueError(
            f"{path} was written by {len(saved['rng'])} processes; resume it with the same world size, not "
            f"{ctx.world_size}"
        )
    state = _sharded_state(model, optimizer)
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=SHARDED)  # fmt: skip
    return _restored(saved, scheduler, saved["rng"][ctx.rank])
