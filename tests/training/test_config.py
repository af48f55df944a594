from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.training.conftest import PIRATE
from training.config import load_config
from training.data import load_conversations


def test_yaml_then_dotted_overrides(tmp_path):
    (tmp_path / "data.jsonl").write_text("")
    path = tmp_path / "run.yaml"
    path.write_text("dataset: data.jsonl\nadapter_name: demo\nlora: {r: 4}\n")
    config = load_config(path, ["lora.r=16", "max_steps=10", "lora.target_modules=[q_proj]"])
    assert config.lora.r == 16 and config.lora.alpha == 16
    assert config.max_steps == 10
    assert config.lora.target_modules == ["q_proj"]
    assert config.dataset == tmp_path / "data.jsonl"  # relative to the YAML file
    assert config.out.name == "demo"


def test_bad_keys_and_names_are_rejected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: d.jsonl\nadapter_name: demo\n")
    with pytest.raises(ValidationError):
        load_config(path, ["lora.rank=3"])
    with pytest.raises(ValidationError):
        load_config(path, ["adapter_name=Not_Lower"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(path, ["max_steps"])


def test_example_config_and_data_are_valid():
    config = load_config(PIRATE.with_suffix(".yaml"))
    assert config.dataset == PIRATE and config.adapter_name == "pirate-lora"
    conversations = load_conversations(config.dataset)
    assert len(conversations) == 300
    assert all(conv[-1]["content"].endswith("Arr!") for conv in conversations)
