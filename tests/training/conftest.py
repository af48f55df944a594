"""One tiny real training run per session (a few steps, short sequences) shared by the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from serving.registry.store import get_model
from training.checkpoint import latest
from training.config import TrainConfig
from training.pipeline import run

# One intra-op thread: on this shared 2-core box two spinning OpenMP threads per process were measured several
# times slower than one (the torchrun test's processes get OMP_NUM_THREADS=1 from torchrun itself).
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
PIRATE = ROOT / "training" / "examples" / "pirate.jsonl"
TINY: dict[str, Any] = {
    "dataset": str(PIRATE),
    "adapter_name": "test-pirate",
    "learning_rate": 0.002,
    "max_steps": 4,
    "batch_size": 2,
    "max_seq_len": 48,
    "truncation_side": "left",
    "eval_fraction": 0.02,
    "precision": "fp32",
    "max_pass_tokens": 48,  # several passes per micro-batch, so every real run here goes through them
    "checkpoint_every": 2,
    "sample_prompts": ["What is the capital of France?"],
    "sample_max_new_tokens": 6,
}


def subprocess_env() -> dict[str, str]:
    """For a training run in its own process(es): this checkout's code, one OpenMP thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def killed_after_first_checkpoint(command: list[str], checkpoints: Path) -> int:
    """Starts a training run, SIGKILLs it and every process under it (torchrun starts each rank in its own
    session, so a process group would miss them) once a checkpoint is complete: a hard stop with no chance to
    clean up, as a machine failure leaves a run. Returns the newest checkpoint's step."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while latest(checkpoints) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    for child in children:
        child.kill()
    process.wait()
    psutil.wait_procs(children)
    killed_at = latest(checkpoints)
    assert killed_at is not None, "no checkpoint before the run ended"
    return int(killed_at.name.removeprefix("step-"))


@pytest.fixture(scope="session")
def base_model(settings):
    return get_model(settings.model.name)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    return TrainConfig(**TINY, output_dir=tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def trained(tiny_config: TrainConfig, base_model) -> dict[str, Any]:
    """The manifest of the shared run; its files are under tiny_config.out."""
    manifest = run(tiny_config, base_model.path, base_model.tag)
    assert manifest is not None
    return manifest


@pytest.fixture
def peft_model() -> PeftModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(config), lora)
