"""A version's capacity profile (`servekit capacity`), kept as `capacity.json` inside the version's directory in
the BentoML store, next to manifest.json.

BentoML has no public API to change an existing model's metadata (model.yaml is written once, at
`bentoml.models.create`); a file in the model's directory is part of the model all the same: `bentoml models
export/push` carry the whole directory, `bentoml.models.get(tag).path` finds it, and re-profiling rewrites it
without re-registering the version."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.protocol import CapacityProfile
from serving.registry.store import RegisteredModel

PROFILE_FILE = "capacity.json"


class CapacityProfileError(ValueError):
    """A stored profile that cannot be read (hand-edited, or from a newer servekit)."""


def capacity_profile(model: RegisteredModel) -> CapacityProfile | None:
    """The version's stored profile; None when it was never profiled."""
    path = model.path / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        return CapacityProfile.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise CapacityProfileError(f"{path} is not a capacity profile: {exc}") from exc


def store_capacity_profile(model: RegisteredModel, profile: dict[str, Any]) -> Path:
    """Validate and write `profile` as the version's profile (replacing an older one); the file's path."""
    checked = CapacityProfile.model_validate(profile)
    path = model.path / PROFILE_FILE
    path.write_text(json.dumps(checked.model_dump(mode="json"), indent=2))
    return path


def in_flight_cap(profile: CapacityProfile | None, margin: float) -> int | None:
    """The in-flight requests one engine of the version should admit: the knee's concurrency times `margin`
    (`limits.capacity_margin`), at least 1; None without a profile or without a knee (no load met the SLO)."""
    if profile is None or profile.knee is None:
        return None
    return max(1, math.floor(profile.knee.concurrency * margin))
