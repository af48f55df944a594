"""Adapter versions: PEFT LoRA directories registered against the base version they were trained for."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from serving import __version__
from serving.registry.prepare import ModelSourceError, directory_sha256
from serving.registry.store import RegisteredModel, find_by_label, import_directory

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_config(path: Path) -> dict:
    return json.loads((path / ADAPTER_CONFIG).read_text())


def adapter_rank(path: Path) -> int:
    return int(adapter_config(path)["r"])


def trainable_parameters(path: Path) -> int | None:
    """Parameters in the adapter's weights file (what training updated), read from the safetensors header;
    None when the file is missing or not safetensors (a listing shows every version, readable or not)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path / ADAPTER_WEIGHTS, framework="numpy") as weights:
            return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    except (OSError, SafetensorError):
        return None


def unserved_modules(path: Path, served: frozenset[str] | None) -> list[str]:
    """The adapter's target modules an engine restricted to `served` (None: every layer) would silently skip.
    PEFT also allows one string (a regex or `all-linear`): it cannot be checked against a list, so it counts
    as unserved unless the engine wraps every layer."""
    if served is None:
        return []
    targets = adapter_config(path)["target_modules"]
    if isinstance(targets, str):
        return [targets]
    return sorted(set(targets) - served)


def import_adapter(path: Path, name: str, base: RegisteredModel) -> tuple[RegisteredModel, bool]:
    """Register an existing PEFT adapter directory as `name:<sha256[:12]>`; returns (version, created)."""
    if not (path / ADAPTER_CONFIG).is_file():
        raise ModelSourceError(f"{path} is not a PEFT adapter directory (no {ADAPTER_CONFIG})")
    sha = directory_sha256(path, None)
    existing = find_by_label(name, "source_sha256", sha)
    if existing is not None:
        return existing, False
    version = sha[:12]
    manifest = {
        "kind": "adapter",
        "name": name,
        "version": version,
        "base_model": base.tag,
        "source": str(path),
        "source_sha256": sha,
        "rank": adapter_rank(path),
        "created_at": datetime.now(UTC).isoformat(),
        "servekit_version": __version__,
    }
    labels = {"kind": "adapter", "base": base.tag, "source_sha256": sha}
    return import_directory(name, version, path, labels, manifest), True


def merge_adapter(base_path: Path, adapter_path: Path, out: Path) -> Path:
    """Base + adapter folded into plain bf16 safetensors with the tokenizer: servable by any engine, LoRA support
    or not, at the cost of a full copy of the weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    PeftModel.from_pretrained(model, adapter_path).merge_and_unload().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    return out
