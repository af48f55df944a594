from __future__ import annotations

import re

from training.config import TrainConfig
from training.publish import version_id


def test_version_id_is_stable_lowercase_and_recipe_bound(tmp_path):
    config = TrainConfig(dataset=tmp_path / "d.jsonl", adapter_name="pirate-lora")
    tag = version_id(config, "smollm2-135m-instruct:abc", "f" * 64)
    assert re.fullmatch(r"pirate-lora:[0-9a-f]{12}", tag)
    moved = config.model_copy(update={"output_dir": tmp_path / "elsewhere", "checkpoint_every": 7})
    assert version_id(moved, "smollm2-135m-instruct:abc", "f" * 64) == tag
    assert version_id(config, "smollm2-135m-instruct:def", "f" * 64) != tag
    assert version_id(config, "smollm2-135m-instruct:abc", "e" * 64) != tag
    changed = config.model_copy(update={"learning_rate": 1e-3})
    assert version_id(changed, "smollm2-135m-instruct:abc", "f" * 64) != tag
