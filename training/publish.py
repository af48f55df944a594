"""manifest.json: what an adapter is, where it came from and how good it is, for the registry."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training import __version__
from training.config import TrainConfig

MANIFEST_FILE = "manifest.json"


def version_id(config: TrainConfig, base_tag: str, data_sha256: str) -> str:
    """`<adapter name>:<12 hex>` from base tag, data hash and config: re-running the same recipe names the
    same version (BentoML tag rules: lowercase `[a-z0-9][a-z0-9._-]*`)."""
    recipe = json.dumps({"base": base_tag, "data": data_sha256, "config": config.identity()}, sort_keys=True)
    return f"{config.adapter_name}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def build_manifest(
    config: TrainConfig,
    base_tag: str,
    data_sha256: str,
    report: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    tag = version_id(config, base_tag, data_sha256)
    manifest = {
        "kind": "adapter",
        "name": config.adapter_name,
        "version": tag.split(":", 1)[1],
        "tag": tag,
        "base_model": base_tag,
        "data_sha256": data_sha256,
        "config": config.model_dump(mode="json"),
        "eval": {
            "before": {k: report["before"][k] for k in ("eval_loss", "perplexity")},
            "after": {k: report["after"][k] for k in ("eval_loss", "perplexity")},
        },
        "training": training,
        "created_at": datetime.now(UTC).isoformat(),
        "servekit_version": __version__,
    }
    return _without_none(manifest)


def _without_none(value: Any) -> Any:
    """Unset values are left out rather than written as null: registries (BentoML metadata) accept only
    basic types, and an absent key reads the same as an unset one."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def write_manifest(output_dir: Path, manifest: dict[str, Any]) -> Path:
    path = output_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return path
