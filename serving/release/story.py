"""Gathers what is known about one release from where each piece lives: the server's audit log, rollout state,
served models and shadow runs (through the admin API), the registry's manifest and eval.json, the shadow's
results.json. A missing piece is recorded as a note, never an error: the report says what is not there."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.registry.store import ModelMissingError, RegisteredModel, get_model_by_tag

Fetch = Callable[[str], Any]
"""`GET /admin{path}` of the server as JSON; None when the server answers 404."""
Registry = Callable[[str], RegisteredModel]
EVAL_FILE = "eval.json"
GATE_EVENT = "pre-rollout gate"


@dataclass
class Release:
    route: str
    rollout_number: int | None = None
    rollouts: int = 0
    primary: str | None = None
    candidate: str | None = None
    candidate_version: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    """The chosen rollout's audit entries, its pre-rollout gates first."""
    manifest: dict[str, Any] | None = None
    kind: str | None = None
    evaluation: dict[str, Any] | None = None
    shadow: dict[str, Any] | None = None
    """The shadow run the rollout relied on (or the route's last run of the candidate): run, pairs."""
    shadow_required: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    """Section -> why it is empty."""


def split_rollouts(history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The route's audit log cut into rollouts: each from the gates checked before its start to the entry before
    the next rollout's gates; refused attempts after the last rollout are left out (they started nothing)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    for entry in history:
        begins = entry["event"] in (GATE_EVENT, "started")
        if begins and any(e["event"] == "started" for e in chunks[-1]):
            chunks.append([])
        chunks[-1].append(entry)
    return [chunk for chunk in chunks if any(e["event"] == "started" for e in chunk)]


def gather(route: str, fetch: Fetch, rollout: int | None = None, registry: Registry = get_model_by_tag) -> Release:
    """`rollout`: the 1-based number of the route's rollout (default: the last one)."""
    release = Release(route)
    rollouts = split_rollouts(fetch(f"/rollouts/{route}/history") or [])
    release.rollouts = len(rollouts)
    if not rollouts:
        release.notes["rollout"] = f"Route `{route}` has had no rollout on this server."
    elif rollout is not None and not 1 <= rollout <= len(rollouts):
        release.notes["rollout"] = f"Route `{route}` has had {len(rollouts)} rollout(s); there is no number {rollout}."
    else:
        release.rollout_number = rollout or len(rollouts)
        release.entries = rollouts[release.rollout_number - 1]
        started = next(e for e in release.entries if e["event"] == "started")
        release.primary, release.candidate = started.get("primary"), started.get("canary")
        release.shadow_required = (started.get("gates") or {}).get("require_shadow")
    if release.candidate is None:
        state = fetch(f"/rollouts/{route}")
        release.candidate = state["canary"] if state else None
    if release.candidate is not None:
        _lineage(release, fetch, registry)
    _shadow(release, fetch)
    return release


def _lineage(release: Release, fetch: Fetch, registry: Registry) -> None:
    cards = fetch("/models") or {"data": []}
    card = next((c for c in cards["data"] if c["id"] == release.candidate), None)
    release.candidate_version = card["root"] if card else release.candidate
    try:
        model = registry(release.candidate_version)
    except ModelMissingError:
        release.notes["lineage"] = f"`{release.candidate_version}` is not in the registry this report was made on."
        return
    except Exception as exc:  # a report of what is there: an unreadable registry is one more missing piece
        release.notes["lineage"] = f"The registry could not be read for `{release.candidate_version}`: {exc!r}"
        return
    release.kind = model.labels.get("kind") or model.metadata.get("kind")
    manifest = model.path / "manifest.json"
    release.manifest = json.loads(manifest.read_text()) if manifest.is_file() else dict(model.metadata) or None
    if release.kind in ("base", None) and not (release.manifest or {}).get("training"):
        release.notes["lineage"] = f"`{model.tag}` is a base version: it was not trained by servekit."
    evaluation = model.path / EVAL_FILE
    if evaluation.is_file():
        release.evaluation = json.loads(evaluation.read_text())
    else:
        release.notes["training"] = f"`{model.tag}` has no {EVAL_FILE}: no training curve or held-out evaluation."


def _shadow(release: Release, fetch: Fetch) -> None:
    relied_on = next(  # the last shadow verdict before the start: the one that let it start
        (
            e.get("evidence")
            for e in reversed(release.entries)
            if e["event"] == GATE_EVENT and e.get("gate") == "shadow"
        ),
        None,
    )
    run = relied_on["run"] if relied_on and relied_on.get("run") else None
    if run is None:
        last = fetch(f"/shadows/{release.route}")
        run = last if last and last["candidate"] == release.candidate and release.candidate else None
    if run is None:
        release.notes["shadow"] = "No shadow run of this candidate on this route."
        return
    results = Path(run["report"]).with_name("results.json") if run.get("report") else None
    pairs = json.loads(results.read_text())["pairs"] if results is not None and results.is_file() else []
    release.shadow = {"run": run, "pairs": pairs, "samples": []}
