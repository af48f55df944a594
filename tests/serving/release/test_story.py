"""Gathering a release from audit log, served models, shadow runs and the registry, pieces missing included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.registry.store import ModelMissingError, RegisteredModel
from serving.release.story import gather, split_rollouts

GATE_REFUSED = {"at": 1.0, "event": "pre-rollout gate", "gate": "shadow", "passed": False, "detail": "shadow: no"}
SHADOW_RUN = {"candidate": "new", "report": None, "comparison": {"agreement": 1.0}}
GATE_PASSED = {"at": 2.0, "event": "pre-rollout gate", "gate": "shadow", "passed": True, "detail": "shadow: held",
               "evidence": {"required": "agreement>=0.9", "run": SHADOW_RUN}}  # fmt: skip
STARTED = {
    "at": 3.0,
    "event": "started",
    "primary": "chat",
    "canary": "new",
    "gates": {"require_shadow": "agreement>=0.9"},
}
PROMOTED = {"at": 9.0, "event": "promote", "phase": "promoted", "reason": "healthy", "canary_weight": 100.0}
HISTORY = [
    {"at": 0.0, "event": "started", "primary": "old", "canary": "chat", "gates": {}},
    {"at": 0.5, "event": "rollback", "phase": "rolled_back", "reason": "errors", "canary_weight": 0.0},
    GATE_REFUSED, GATE_PASSED, STARTED, PROMOTED,
    {"at": 10.0, "event": "pre-rollout gate", "gate": "shadow", "passed": False, "detail": "refused, nothing started"},
]  # fmt: skip


def server(pages: dict[str, object]):
    return lambda path: pages.get(path)


def trained_version(tmp_path: Path) -> RegisteredModel:
    """A registry version laid out as `servekit train` registers one: manifest.json and eval.json."""
    manifest = {"kind": "adapter", "tag": "new:abc", "base_model": "base:1", "data_sha256": "d" * 64,
                "config": {"lora": {"r": 8}, "max_steps": 3},
                "training": {"trainable_params": 4096, "steps": 3}}  # fmt: skip
    evaluation = {"before": {"eval_loss": 3.0, "perplexity": 20.1}, "after": {"eval_loss": 2.0, "perplexity": 7.4},
                  "eval_examples": 4, "train_loss": [[1, 3.2], [2, 2.6], [3, 2.1]]}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    return RegisteredModel("new:abc", tmp_path, {"kind": "adapter"}, manifest)


def test_the_audit_log_is_cut_into_rollouts_each_with_the_gates_checked_before_it():
    rollouts = split_rollouts(HISTORY)
    assert [[e["event"] for e in r] for r in rollouts] == [
        ["started", "rollback"], ["pre-rollout gate", "pre-rollout gate", "started", "promote"]
    ]  # fmt: skip


def test_a_whole_release_is_gathered(tmp_path):
    pages = {"/rollouts/ab/history": HISTORY, "/models": {"data": [{"id": "new", "root": "new:abc"}]}}
    release = gather("ab", server(pages), registry=lambda tag: trained_version(tmp_path))
    assert (release.rollout_number, release.rollouts, release.primary, release.candidate) == (2, 2, "chat", "new")
    assert release.candidate_version == "new:abc" and release.kind == "adapter"
    assert release.manifest["training"]["trainable_params"] == 4096 and release.evaluation["train_loss"][0] == [1, 3.2]
    assert release.shadow["run"] == SHADOW_RUN and release.shadow_required == "agreement>=0.9"
    assert release.notes == {}
    first = gather("ab", server(pages), rollout=1, registry=lambda tag: trained_version(tmp_path))
    assert (first.candidate, first.shadow, first.notes["shadow"]) == (
        "chat",
        None,
        "No shadow run of this candidate on this route.",
    )


def test_missing_pieces_become_notes_not_errors(tmp_path):
    def unregistered(tag: str) -> RegisteredModel:
        raise ModelMissingError(tag)

    nothing = gather("ab", server({}), registry=unregistered)
    assert nothing.candidate is None and set(nothing.notes) == {"rollout", "shadow"}
    assert "no rollout" in nothing.notes["rollout"]
    beyond = gather("ab", server({"/rollouts/ab/history": HISTORY}), rollout=7, registry=unregistered)
    assert "there is no number 7" in beyond.notes["rollout"]
    base = RegisteredModel("chat:v1", tmp_path, {"kind": "base"}, {})
    only_base = gather("ab", server({"/rollouts/ab/history": HISTORY}), rollout=1, registry=lambda tag: base)
    assert "base version" in only_base.notes["lineage"] and "no eval.json" in only_base.notes["training"]
    unreadable = gather("ab", server({"/rollouts/ab/history": HISTORY}), registry=unregistered)
    assert "not in the registry" in unreadable.notes["lineage"]


@pytest.mark.parametrize("pairs_on_disk", [True, False])
def test_the_shadow_run_falls_back_to_the_routes_last_one_of_the_candidate(tmp_path, pairs_on_disk):
    report = tmp_path / "run" / "report.html"
    report.parent.mkdir()
    if pairs_on_disk:
        (report.parent / "results.json").write_text(json.dumps({"pairs": [{"similarity": 1.0}], "samples": ["x"]}))
    last = {**SHADOW_RUN, "report": str(report)}
    history = [{"at": 0.0, "event": "started", "primary": "chat", "canary": "new", "gates": {}}]
    pages = {"/rollouts/ab/history": history, "/shadows/ab": last}
    release = gather("ab", server(pages), registry=lambda tag: trained_version(tmp_path))
    assert release.shadow["run"] == last and release.shadow["samples"] == []  # prompts stay in the shadow's own file
    assert release.shadow["pairs"] == ([{"similarity": 1.0}] if pairs_on_disk else [])
