"""Resume after a hard kill, and a 2-process torchrun (gloo) run, both as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.conftest import ROOT, TINY, TORCHRUN, killed_after_first_checkpoint, subprocess_env
from training.checkpoint import latest


def _write_config(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "out"), **changes}))
    return path


def test_resume_after_kill_continues_from_the_checkpoint(tmp_path, base_model):
    config = _write_config(tmp_path, max_steps=4, checkpoint_every=1, batch_size=1)
    command = [sys.executable, "-m", "training", str(config), "--base-path", str(base_model.path)]
    step = killed_after_first_checkpoint(command, tmp_path / "out" / "checkpoints")
    assert step < 4, "killed too late to test resume"

    subprocess.run([*command, "--resume"], cwd=ROOT, env=subprocess_env(), check=True, capture_output=True)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_step"] >= step  # at least the checkpoint seen after the kill
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [s for s, _ in report["train_loss"]] == [1, 2, 3, 4]  # every step exactly once, none lost
    assert latest(tmp_path / "out" / "checkpoints").name == "step-000004"


def test_torchrun_two_processes(tmp_path, base_model):
    config = _write_config(tmp_path, max_steps=2, batch_size=1, checkpoint_every=1)
    result = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "-m", "training", str(config), "--base-path", str(base_model.path)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2
    assert manifest["training"]["steps"] == 2


def test_precision_auto_takes_bf16_only_where_it_is_fast():
    import torch

    from training.config import TrainConfig
    from training.trainer import uses_bf16

    cpu = torch.device("cpu")
    assert uses_bf16(TrainConfig(**{**TINY, "precision": "bf16"}), cpu)
    assert not uses_bf16(TrainConfig(**{**TINY, "precision": "fp32"}), cpu)
    assert uses_bf16(TrainConfig(**{**TINY, "precision": "auto"}), cpu) == torch.cpu._is_amx_tile_supported()


def test_pass_tokens_auto_bounds_passes_on_cpu_only():
    import torch

    from training.config import TrainConfig
    from training.trainer import CPU_PASS_TOKENS, pass_tokens

    auto = TrainConfig(**{**TINY, "max_pass_tokens": "auto"})
    assert pass_tokens(auto, torch.device("cpu")) == CPU_PASS_TOKENS
    assert pass_tokens(auto, torch.device("cuda")) is None
    assert pass_tokens(TrainConfig(**{**TINY, "max_pass_tokens": 64}), torch.device("cuda")) == 64
    assert pass_tokens(TrainConfig(**{**TINY, "max_pass_tokens": None}), torch.device("cpu")) is None
    with pytest.raises(ValueError):
        TrainConfig(**{**TINY, "max_pass_tokens": 0})
