"""One tiny real training run per session (a few steps, short sequences) shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from serving.registry.store import get_model
from training.config import TrainConfig
from training.pipeline import run

# One intra-op thread: on this shared 2-core box two spinning OpenMP threads per process were measured several
# times slower than one (the torchrun test's processes get OMP_NUM_THREADS=1 from torchrun itself).
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
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
    "checkpoint_every": 2,
    "sample_prompts": ["What is the capital of France?"],
    "sample_max_new_tokens": 6,
}


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
