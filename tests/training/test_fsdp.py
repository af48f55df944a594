"""FSDP on two real gloo ranks (torchrun): killed and resumed, the run has the losses and adapter one process
gets for the same recipe, writes a plain PEFT adapter, and that adapter is served by the real vLLM engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from serving.registry.store import RegisteredModel
from tests.training.conftest import ROOT, TINY, TORCHRUN, killed_after_first_checkpoint, subprocess_env
from training.checkpoint import latest
from training.config import TrainConfig
from training.pipeline import run

RECIPE: dict[str, Any] = {**TINY, "batch_size": 2, "max_steps": 4, "checkpoint_every": 1, "lora": {"dropout": 0.0}}
"""Global micro-batch 2: one row per rank. LoRA dropout off, since each rank draws its own masks: with it off one
process and two ranks do the same arithmetic, so what is compared is the sharding alone."""
LOSS_RTOL = 1e-5
"""Measured: identical to the last bit (fp32; the x2 loss weight and FSDP's /2 average are exact). The bound
leaves room for a different reduction order on another build, far below a wrong batch or normalisation (>1e-2)."""


def _fsdp_command(config: Path, base: RegisteredModel, *extra: str) -> list[str]:
    return [str(TORCHRUN), "--nproc_per_node", "2", "-m", "training", str(config), "--base-path", str(base.path),
            "--base-tag", base.tag, "--set", "parallel=fsdp", *extra]  # fmt: skip


def _losses(out: Path) -> list[tuple[int, float]]:
    return [tuple(item) for item in json.loads((out / "eval.json").read_text())["train_loss"]]


def _recipe_file(directory: Path) -> Path:
    path = directory / "run.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(directory / "out")}))
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, base_model) -> dict[str, Any]:
    """The reference: the same recipe in this process, no process group."""
    manifest = run(TrainConfig(**RECIPE, output_dir=tmp_path_factory.mktemp("one")), base_model.path, base_model.tag)
    assert manifest is not None
    return manifest


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, base_model) -> tuple[Path, int]:
    """A two-rank FSDP run killed after its first checkpoint and resumed: its output directory and the step it
    was killed at. Its curve must be the uninterrupted one, so one launch pair tests both."""
    directory = tmp_path_factory.mktemp("fsdp")
    command = _fsdp_command(_recipe_file(directory), base_model)
    killed_at = killed_after_first_checkpoint(command, directory / "out" / "checkpoints")
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                             timeout=400)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return directory / "out", killed_at


def test_fsdp_resumes_after_a_kill_with_every_step_once(sharded):
    out, killed_at = sharded
    assert killed_at < 4, "killed too late to test resume"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from_step"] >= killed_at
    assert [step for step, _ in _losses(out)] == [1, 2, 3, 4]
    assert latest(out / "checkpoints").name == "step-000004"


def test_two_fsdp_ranks_train_what_one_process_trains(sharded, one_process):
    out, _ = sharded
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["training"]["world_size"], manifest["training"]["parallel"]) == (2, "fsdp")
    assert manifest["tag"] == one_process["tag"]  # the version id does not depend on the world
    reference = Path(one_process["config"]["output_dir"])
    assert [loss for _, loss in _losses(out)] == pytest.approx([loss for _, loss in _losses(reference)], rel=LOSS_RTOL)
    ours, theirs = load_file(out / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[name], theirs[name], rtol=LOSS_RTOL, atol=1e-7) for name in ours)


def test_the_fsdp_adapter_is_a_plain_peft_adapter(sharded, base_model):
    out, _ = sharded
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model.path), out)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 921_600
    trained = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained and all(p.abs().sum() > 0 for p in trained)  # B starts at zero: all trained, all saved
    assert not (out / "checkpoints" / "step-000004" / "adapter_model.safetensors").exists()  # shards there


def test_the_fsdp_adapter_is_served_by_the_vllm_engine(sharded, server, base_model):
    """Registered like any adapter, it hot-loads into the real engine and answers under its own name."""
    import bentoml
    import httpx
    import openai

    from serving.registry.adapters import import_adapter

    registered, _ = import_adapter(sharded[0], "test-fsdp-pirate", base_model)
    try:
        loaded = httpx.post(f"{server.base_url}/admin/models/{registered.tag}/load", timeout=120)
        assert loaded.status_code == 200, loaded.text
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=registered.tag, messages=[{"role": "user", "content": "Where is the treasure?"}], max_tokens=8,
            temperature=0,
        )  # fmt: skip
        assert raw.headers["x-servekit-version"] == registered.tag
        assert raw.parse().choices[0].message.content
        assert httpx.post(f"{server.base_url}/admin/models/{registered.tag}/unload", timeout=120).status_code == 200
    finally:
        bentoml.models.delete(registered.tag)
