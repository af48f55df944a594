"""The release report as one self-contained HTML file, in the order a release happened: lineage, training and
evaluation, shadow comparison, gates, rollout timeline, outcome. Each section states when its piece is missing."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from loadtest.report import STYLE, png
from serving.release.story import GATE_EVENT, Release
from serving.shadow.report import shadow_section, when

SECTIONS = ("lineage", "training", "shadow", "gates", "timeline", "outcome")
TITLES = {
    "lineage": "1. Lineage", "training": "2. Training and held-out evaluation", "shadow": "3. Shadow comparison",
    "gates": "4. Gates", "timeline": "5. Rollout timeline", "outcome": "6. Outcome",
}  # fmt: skip


def _note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] = (), css: str = "") -> str:
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" if head else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('–' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}">{header}{body}</table>' if css else f"<table>{header}{body}</table>"


def lineage(release: Release) -> str:
    manifest = release.manifest or {}
    parts = []
    if release.candidate_version:
        parts.append(_table([("candidate", release.candidate), ("registry version", release.candidate_version),
                             ("kind", release.kind)]))  # fmt: skip
    if manifest.get("training") or manifest.get("base_model"):
        training = manifest.get("training", {})
        parts.append(_table([
            ("base", manifest.get("base_model")), ("data sha256", manifest.get("data_sha256")),
            ("created", manifest.get("created_at")), ("trainable parameters", training.get("trainable_params")),
            ("optimizer steps", training.get("steps")), ("train examples", training.get("train_examples")),
            ("training seconds", training.get("seconds")), ("servekit", manifest.get("servekit_version")),
        ]))  # fmt: skip
    if manifest.get("config"):
        config = [(key, json.dumps(value) if isinstance(value, dict | list) else value)
                  for key, value in manifest["config"].items()]  # fmt: skip
        parts += ["<h3>Training config</h3>", _table(config, ("setting", "value"))]
    if "lineage" in release.notes:
        parts.append(_note(release.notes["lineage"]))
    return "".join(parts) or _note("No candidate: nothing to trace.")


def training(release: Release) -> str:
    evaluation = release.evaluation
    evals = (release.manifest or {}).get("eval")
    if evaluation is None and not evals:
        return _note(release.notes.get("training") or release.notes.get("lineage") or "No training record.")
    parts = []
    history = (evaluation or {}).get("train_loss") or []
    if history:
        fig, axis = plt.subplots(figsize=(7, 3.5))
        axis.plot([step for step, _ in history], [loss for _, loss in history], marker=".", label="train loss")
        shown = [loss for _, loss in history]
        for label, key, color in (("eval base", "before", "#9aa5b1"), ("eval adapter", "after", "#3b7dd8")):
            value = (evaluation or {}).get(key, {}).get("eval_loss")
            if value is not None:
                axis.axhline(value, linestyle="--", linewidth=1, color=color, label=f"{label} {value:.3f}")
                shown.append(value)
        pad = 0.1 * (max(shown) - min(shown) or 1)
        axis.set_ylim(min(shown) - pad, max(shown) + pad)  # the eval lines inside the frame, not on its edge
        axis.set(xlabel="optimizer step", ylabel="loss", title="training loss")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no 1.2 on a two-step run
        axis.legend()
        parts.append(png(fig))
    source = evaluation or evals
    rows = [(metric, source.get("before", {}).get(metric), source.get("after", {}).get(metric))
            for metric in ("eval_loss", "perplexity")]  # fmt: skip
    parts.append(_table([(m, _num(b), _num(a)) for m, b, a in rows], ("held-out", "base", "base + adapter")))
    if evaluation and evaluation.get("eval_examples") is not None:
        parts.append(f"<p>{evaluation['eval_examples']} held-out examples.</p>")
    return "".join(parts)


def shadow(release: Release) -> str:
    if release.shadow is None:
        return _note(release.notes.get("shadow", "No shadow run."))
    required = f"<p>Required by the rollout: <code>{html.escape(release.shadow_required)}</code></p>"
    return (required if release.shadow_required else "") + shadow_section(release.shadow)


def gates(release: Release) -> str:
    rows = [("pre-rollout", e["gate"], "passed" if e["passed"] else "REFUSED", e["detail"], e.get("report"))
            for e in release.entries if e["event"] == GATE_EVENT]  # fmt: skip
    for entry in release.entries:
        step_results = entry.get("gates")  # a tick's gate verdicts; "started" keeps the gates' specs here instead
        for result in step_results if isinstance(step_results, list) else []:
            verdict = "passed" if result["passed"] else "failed"
            rows.append((f"step {entry.get('step')}", result["gate"], verdict, result["detail"], result.get("report")))
    if not rows:
        return _note("No gate was configured for this rollout.")
    return _table(rows, ("stage", "gate", "verdict", "detail", "report"), css="text")


def _num(value: float | None, fmt: str = "{:.4g}") -> str | None:
    return None if value is None else fmt.format(value)


def _ratio(observation: dict[str, Any], key: str) -> str | None:
    primary, canary = observation["primary"].get(key), observation["canary"].get(key)
    return _num(canary / primary, "{:.3f}") if canary is not None and primary else None


def _error_rate(stats: dict[str, Any]) -> str | None:
    return _num(stats["server_errors"] / stats["requests"], "{:.2%}") if stats.get("requests") else None


def timeline(release: Release) -> str:
    entries = [e for e in release.entries if e["event"] != GATE_EVENT]
    if not entries:
        return _note(release.notes.get("rollout", "No rollout."))
    start = entries[0]["at"]
    rows = []
    for entry in entries:
        observation = entry.get("observation")
        numbers: tuple[Any, ...] = (None,) * 5
        if observation:
            numbers = (
                f"{observation['primary']['requests']} / {observation['canary']['requests']}",
                _error_rate(observation["primary"]), _error_rate(observation["canary"]),
                _ratio(observation, "ttft_p95_s"), _ratio(observation, "latency_p95_s"),
            )  # fmt: skip
        rows.append((f"{entry['at'] - start:.0f} s", entry["event"], entry.get("reason"), entry.get("phase"),
                     _num(entry.get("canary_weight"), "{:g} %"), *numbers))  # fmt: skip
    head = ("at", "decision", "why", "phase", "canary weight", "requests primary / canary", "primary errors",
            "canary errors", "TTFT p95 ratio", "latency p95 ratio")  # fmt: skip
    return f"<p>Started {when(start)}.</p>" + _table(rows, head) + _weights_plot(entries)


def _weights_plot(entries: list[dict[str, Any]]) -> str:
    start, points, weight = entries[0]["at"], [], 0.0
    for entry in entries:
        if entry.get("canary_weight") is not None:
            weight = entry["canary_weight"]
        elif entry.get("phase") == "promoted":
            weight = 100.0
        elif entry.get("phase") == "rolled_back":
            weight = 0.0
        points.append((entry["at"] - start, weight))
    fig, axis = plt.subplots(figsize=(7, 3))
    axis.step([t for t, _ in points], [w for _, w in points], where="post", marker="o", color="#3b7dd8")
    axis.set(title="canary weight over time", xlabel="s since start", ylabel="% of the route", ylim=(-3, 103))
    axis.grid(alpha=0.3)
    return png(fig)


def outcome(release: Release) -> str:
    if not release.entries:
        return _note(release.notes.get("rollout", "No rollout: no outcome."))
    last = release.entries[-1]
    phase = last.get("phase")
    label = {"promoted": ("pass", "PROMOTED"), "rolled_back": ("fail", "ROLLED BACK")}.get(phase, ("none", None))
    why = html.escape(str(last.get("reason") or last["event"]))
    state = label[1] or f"IN PROGRESS ({phase})"
    candidate, route = html.escape(release.candidate or ""), html.escape(release.route)
    return (f'<div class="verdict {label[0]}">{state}: {candidate} on {route}</div>'
            f"<p>Last decision: {why} ({when(last['at'])}).</p>")  # fmt: skip


def render(release: Release) -> str:
    builders = {"lineage": lineage, "training": training, "shadow": shadow, "gates": gates, "timeline": timeline,
                "outcome": outcome}  # fmt: skip
    title = f"Release of {release.candidate or 'no candidate'} on {release.route}"
    subtitle = (f"rollout {release.rollout_number} of {release.rollouts} on this route, primary before: "
                f"{release.primary}") if release.rollout_number else release.notes.get("rollout", "")  # fmt: skip
    body = "".join(
        f'<section id="{name}"><h2>{TITLES[name]}</h2>{builders[name](release)}</section>' for name in SECTIONS
    )
    style = STYLE + (
        ".missing{color:#8a5a00;background:#fff7e0;padding:.5em 1em;border-radius:4px}"
        "td:first-child{white-space:nowrap}table.text td,table.text th{text-align:left}"
        "table.text td:nth-child(-n+3){white-space:nowrap}table.text td:last-child{overflow-wrap:anywhere}"
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>"
            f"{body}</body></html>")  # fmt: skip


def write(release: Release, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "release.html"
    path.write_text(render(release))
    return path
