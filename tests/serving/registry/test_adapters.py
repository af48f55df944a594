from __future__ import annotations

import json

import bentoml
import pytest

from serving.registry.adapters import adapter_rank, import_adapter
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
