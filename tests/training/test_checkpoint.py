from __future__ import annotations

import random

import pytest
import torch
from peft import PeftModel
from torch.optim.lr_scheduler import LambdaLR

from training import checkpoint
from training.checkpoint import TrainState
from training.distributed import Dist


def _optimizer_and_scheduler(model: PeftModel) -> tuple[torch.optim.Optimizer, LambdaLR]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.01)
    return optimizer, LambdaLR(optimizer, lambda step: 1.0 / (step + 1))


def _one_step(model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> None:
    ids = torch.randint(0, 97, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def _lora_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_load_restores_weights_optimizer_schedule_rng_and_history(tmp_path, peft_model):
    optimizer, scheduler = _optimizer_and_scheduler(peft_model)
    _one_step(peft_model, optimizer, scheduler)
    saved_weights = _lora_weights(peft_model)
    path = checkpoint.save(tmp_path, peft_model, optimizer, scheduler, TrainState(step=1, history=[(1, 2.5)]))
    expected_draws = (random.random(), torch.rand(3))  # what the RNGs give right after the save

    _one_step(peft_model, optimizer, scheduler)  # move everything on, then go back
    assert any(not torch.equal(saved_weights[n], w) for n, w in _lora_weights(peft_model).items())
    state = checkpoint.load(path, peft_model, optimizer, scheduler)

    assert (state.step, state.history) == (1, [(1, 2.5)])
    assert all(torch.equal(saved_weights[n], w) for n, w in _lora_weights(peft_model).items())
    assert scheduler.last_epoch == 1
    assert all(s["step"].item() == 1 for s in optimizer.state.values())  # AdamW's step count as saved
    assert random.random() == expected_draws[0]
    assert torch.equal(torch.rand(3), expected_draws[1])


def test_only_the_newest_checkpoints_are_kept_and_latest_skips_incomplete_ones(tmp_path, peft_model):
    optimizer, scheduler = _optimizer_and_scheduler(peft_model)
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, peft_model, optimizer, scheduler, TrainState(step=step, history=[]))
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002", "step-000003"]
    assert checkpoint.latest(tmp_path).name == "step-000003"
    (tmp_path / "step-000004").mkdir()  # a directory a killed process left without its state file
    (tmp_path / ".partial-000005").mkdir()
    assert checkpoint.latest(tmp_path).name == "step-000003"
    assert checkpoint.latest(tmp_path / "nothing-here") is None


def test_a_whole_adapter_checkpoint_is_not_resumed_as_shards_nor_the_reverse(tmp_path, peft_model):
    optimizer, scheduler = _optimizer_and_scheduler(peft_model)
    path = checkpoint.save(tmp_path, peft_model, optimizer, scheduler, TrainState(step=1, history=[]))
    two_ranks = Dist(0, 2, torch.device("cpu"), "fsdp")
    with pytest.raises(ValueError, match="whole-adapter checkpoint"):  # before any collective call
        checkpoint.load_sharded(path, peft_model, optimizer, scheduler, two_ranks)
    (path / checkpoint.ADAPTER_FILE).unlink()  # what a sharded checkpoint looks like to a one-process resume
    with pytest.raises(ValueError, match="holds FSDP shards; resume it with parallel: fsdp"):
        checkpoint.load(path, peft_model, optimizer, scheduler)
