"""Versions in the real BentoML model store (the project's, under throwaway names removed afterwards)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from serving.registry.store import (
    MANIFEST_FILE,
    ModelMissingError,
    created_at,
    delete_model,
    dependents,
    find_by_label,
    get_model,
    get_model_by_tag,
    import_directory,
    list_models,
)


@pytest.fixture
def name(settings) -> Iterator[str]:
    """A model name nothing else uses; every version of it is deleted after the test."""
    name = f"unit-store-{uuid.uuid4().hex[:8]}"
    yield name
    for model in list_models(name):
        delete_model(model.tag)


def test_an_imported_directory_keeps_its_files_labels_and_manifest(name, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"w")
    manifest = {"kind": "base", "created_at": "2026-12-05T00:00:00Z", "gguf_file": None}
    model = import_directory(name, "v1", tmp_path, {"kind": "base"}, manifest)
    assert (model.tag, model.name, model.version) == (f"{name}:v1", name, "v1")
    assert (model.path / "weights.bin").read_bytes() == b"w"
    assert json.loads((model.path / MANIFEST_FILE).read_text()) == manifest
    assert "gguf_file" not in model.metadata and model.labels == {"kind": "base"}
    assert created_at(model) == "2026-12-05T00:00:00Z"


def test_versions_are_found_by_tag_newest_label_and_lineage(name, tmp_path):
    import_directory(name, "v1", tmp_path, {"kind": "base", "source_sha256": "aaa"}, {})
    import_directory(name, "v2", tmp_path, {"kind": "adapter", "base": f"{name}:v1"}, {})
    assert get_model(name).version == "v2"  # no version: the newest
    assert get_model(name, "v1").labels["source_sha256"] == "aaa"
    assert (get_model_by_tag(name).version, get_model_by_tag(f"{name}:v1").version) == ("v2", "v1")
    assert [m.version for m in list_models(name)] == ["v1", "v2"]
    assert find_by_label(name, "source_sha256", "aaa").version == "v1"
    assert find_by_label(name, "source_sha256", "bbb") is None
    assert dependents(f"{name}:v1") == [f"{name}:v2"]
    delete_model(f"{name}:v2")
    assert dependents(f"{name}:v1") == []


def test_a_missing_version_says_how_to_get_one(name):
    assert list_models(name) == []
    with pytest.raises(ModelMissingError, match=rf"model {name}:latest is not in the registry; run `servekit models"):
        get_model(name)
