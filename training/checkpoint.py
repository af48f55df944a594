"""Resumable checkpoints: adapter weights, optimizer, scheduler, every RNG, the step and the loss history.

Each one is written to a temporary directory and renamed into place, so a process killed mid-write never
leaves a checkpoint that looks complete; resume picks the highest complete step."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

STATE_FILE = "trainer_state.pt"
PREFIX = "step-"
KEEP = 2


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


def save(root: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState) -> Path:
    """Writes `root/step-NNNNNN` and keeps only the newest KEEP checkpoints."""
    final = root / f"{PREFIX}{state.step:06d}"
    partial = root / f".partial-{state.step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    torch.save(
        {
            "step": state.step,
            "history": state.history,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        },
        partial / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-KEEP]:
        shutil.rmtree(old)
    return final


def latest(root: Path) -> Path | None:
    found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def load(path: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState:
    """Restores everything `save` wrote into live objects; returns the step to continue after."""
    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    # Our own file, written by `save`: it holds Python RNG tuples, so the full unpickler is needed.
    saved = torch.load(path / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    return TrainState(step=saved["step"], history=[tuple(item) for item in saved["history"]])
