"""Versions in the BentoML model store: import a model directory, look versions up, list them."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

MANIFEST_FILE = "manifest.json"


class ModelMissingError(LookupError):
    pass


@dataclass(frozen=True)
class RegisteredModel:
    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]

    @classmethod
    def from_stored(cls, stored: bentoml.Model) -> RegisteredModel:
        return cls(
            tag=str(stored.tag),
            path=Path(stored.path),
            labels=dict(stored.info.labels),
            metadata=dict(stored.info.metadata),
        )


def get_model(name: str, version: str | None = None) -> RegisteredModel:
    """The named version, or the newest version of `name`."""
    tag = f"{name}:{version or 'latest'}"
    try:
        return RegisteredModel.from_stored(bentoml.models.get(tag))
    except NotFound as exc:
        raise ModelMissingError(
            f"model {tag} is not in the registry; run `servekit models pull-default` (or `servekit models pull`)"
        ) from exc


def get_model_by_tag(ref: str) -> RegisteredModel:
    """`name` (its newest version) or `name:version`, as users and configs write a version."""
    name, _, version = ref.partition(":")
    return get_model(name, version or None)


def list_models(name: str | None = None) -> list[RegisteredModel]:
    """All versions (of `name`); none is an empty list, not an error."""
    try:
        stored = bentoml.models.list(name) if name else bentoml.models.list()
    except NotFound:
        return []
    return sorted((RegisteredModel.from_stored(m) for m in stored), key=lambda m: m.tag)


def find_by_label(name: str, key: str, value: str) -> RegisteredModel | None:
    """A version of `name` whose label `key` equals `value` (used to make imports idempotent)."""
    return next((m for m in list_models(name) if m.labels.get(key) == value), None)


def import_directory(
    name: str, version: str, source_dir: Path, labels: dict[str, str], manifest: dict[str, Any]
) -> RegisteredModel:
    """Copy a model directory into the store as `name:version`; `manifest` is written as manifest.json
    inside it and also kept as the store's metadata, so both `bentoml models get` and plain files show it
    (BentoML's metadata refuses None, e.g. `gguf_file` of a safetensors source: those entries stay in the file only)."""
    metadata = {key: value for key, value in manifest.items() if value is not None}
    with bentoml.models.create(f"{name}:{version}", labels=labels, metadata=metadata) as stored:
        shutil.copytree(source_dir, stored.path, dirs_exist_ok=True)
        (Path(stored.path) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return get_model(name, version)


def dependents(tag: str) -> list[str]:
    """Versions whose lineage names `tag` as their base (adapters, merged models)."""
    return [m.tag for m in list_models() if m.labels.get("base") == tag]


def delete_model(tag: str) -> None:
    bentoml.models.delete(tag)


def created_at(model: RegisteredModel) -> str:
    return str(model.metadata.get("created_at", ""))
