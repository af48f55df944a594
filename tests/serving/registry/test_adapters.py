from __future__ import annotations

import json

import bentoml
import pytest

from serving.registry.adapters import ADAPTER_CONFIG, adapter_rank, import_adapter, unserved_modules
from serving.registry.prepare import ModelSourceError
from serving.registry.store import RegisteredModel


@pytest.fixture
def adapter_dir(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not really weights")
    return tmp_path


def test_import_is_idempotent_and_records_lineage(adapter_dir, settings):
    base = RegisteredModel(tag="some-base:abc", path=adapter_dir, labels={}, metadata={})
    first, created = import_adapter(adapter_dir, "unit-adapter", base)
    try:
        again, created_again = import_adapter(adapter_dir, "unit-adapter", base)
        assert created and not created_again
        assert again.tag == first.tag
        assert first.labels == {
            "kind": "adapter",
            "base": "some-base:abc",
            "source_sha256": first.metadata["source_sha256"],
        }
        assert first.metadata["rank"] == 8 == adapter_rank(first.path)
        assert (first.path / "manifest.json").is_file()
    finally:
        bentoml.models.delete(first.tag)


def test_a_directory_without_adapter_config_is_refused(tmp_path, settings):
    base = RegisteredModel(tag="some-base:abc", path=tmp_path, labels={}, metadata={})
    with pytest.raises(ModelSourceError, match="not a PEFT adapter"):
        import_adapter(tmp_path, "unit-adapter", base)


def write_config(path, target_modules) -> None:
    path.mkdir()
    (path / ADAPTER_CONFIG).write_text(json.dumps({"r": 8, "target_modules": target_modules}))


def test_unserved_modules_names_layers_the_engine_skips(tmp_path):
    write_config(tmp_path / "mixed", ["q_proj", "down_proj", "gate_proj"])
    served = frozenset({"q_proj", "k_proj"})
    assert unserved_modules(tmp_path / "mixed", served) == ["down_proj", "gate_proj"]
    assert unserved_modules(tmp_path / "mixed", None) == []
    assert unserved_modules(tmp_path / "mixed", frozenset({"q_proj", "down_proj", "gate_proj", "o_proj"})) == []


def test_a_pattern_of_target_modules_counts_as_unserved_unless_every_layer_is(tmp_path):
    write_config(tmp_path / "pattern", "all-linear")
    assert unserved_modules(tmp_path / "pattern", frozenset({"q_proj"})) == ["all-linear"]
    assert unserved_modules(tmp_path / "pattern", None) == []
