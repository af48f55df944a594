"""The canary decision as a pure function: (state, observation, config) -> (new state, action).

In the spirit of Flagger's canary analysis: each tick judges the current step; too little data halts the
step (never fails it); a failed check counts towards `failure_threshold`, after which the canary is rolled
back; a healthy last step promotes it (primary := canary at 100%)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from serving.rollout.observation import Observation


class Phase(enum.StrEnum):
    pending = "pending"
    progressing = "progressing"
    paused = "paused"
    promoted = "promoted"
    rolled_back = "rolled_back"

    @property
    def finished(self) -> bool:
        return self in (Phase.promoted, Phase.rolled_back)


class RolloutConfig(BaseModel):
    steps: list[float] = Field(default_factory=lambda: [5, 10, 25, 50, 100])
    interval_s: float = Field(30.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_ttft_p95_ratio: float = Field(1.25, gt=0)
    max_latency_p95_ratio: float = Field(1.25, gt=0)
    min_requests: int = Field(50, ge=1)
    failure_threshold: int = Field(2, ge=1)

    @field_validator("steps")
    @classmethod
    def increasing_percentages(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("steps must be increasing percentages in (0, 100]")
        return steps


class RolloutState(BaseModel):
    route: str
    primary: str
    canary: str
    config: RolloutConfig
    phase: Phase = Phase.pending
    step: int = Field(0, description="Index into config.steps of the weight the canary has now.")
    failed_checks: int = 0
    ticks: int = 0
    gates: dict[str, Any] = Field(
        default_factory=dict, description="The step gates' specs, kept so a resumed rollout keeps its gates."
    )

    @property
    def canary_weight(self) -> float:
        if self.phase is Phase.promoted:
            return 100.0
        if self.phase in (Phase.pending, Phase.rolled_back):
            return 0.0
        return self.config.steps[self.step]


class ActionKind(enum.StrEnum):
    set_weight = "set_weight"
    promote = "promote"
    rollback = "rollback"
    halt = "halt"
    wait = "wait"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str
    canary_weight: float | None = None


def failed_checks(observation: Observation, config: RolloutConfig) -> list[str]:
    """Checks the canary fails: absolute error rate, and latency ratios against the primary when both have data."""
    canary, primary = observation.canary, observation.primary
    failures = []
    if (rate := canary.error_rate) is not None and rate > config.max_error_rate:
        failures.append(f"error rate {rate:.3f} > {config.max_error_rate}")
    for label, mine, theirs, limit in (
        ("TTFT p95", canary.ttft_p95_s, primary.ttft_p95_s, config.max_ttft_p95_ratio),
        ("latency p95", canary.latency_p95_s, primary.latency_p95_s, config.max_latency_p95_ratio),
    ):
        if mine is not None and theirs:
            ratio = mine / theirs
            if ratio > limit:
                failures.append(f"{label} ratio {ratio:.2f} > {limit} ({mine:.3f}s vs {theirs:.3f}s)")
    return failures


def decide(
    state: RolloutState, observation: Observation | None, gate_failures: tuple[str, ...] = ()
) -> tuple[RolloutState, Action]:
    """One tick. `observation` covers the interval since the last tick (None when the observer had none);
    `gate_failures` are failed per-step gates, counted like failed checks."""
    config = state.config
    ticked = state.model_copy(update={"ticks": state.ticks + 1})
    if state.phase.finished:
        return ticked, Action(ActionKind.wait, f"rollout already {state.phase}")
    if state.phase is Phase.paused:
        return ticked, Action(ActionKind.wait, "paused")
    if state.phase is Phase.pending:
        started = ticked.model_copy(update={"phase": Phase.progressing, "step": 0})
        return started, Action(ActionKind.set_weight, "rollout started", config.steps[0])
    if observation is None or observation.canary.requests < config.min_requests:
        seen = 0 if observation is None else observation.canary.requests
        return ticked, Action(ActionKind.halt, f"not enough data: {seen} canary requests < {config.min_requests}")
    failures = [*gate_failures, *failed_checks(observation, config)]
    if failures:
        count = state.failed_checks + 1
        if count >= config.failure_threshold:
            rolled_back = ticked.model_copy(update={"phase": Phase.rolled_back, "failed_checks": count})
            return rolled_back, Action(ActionKind.rollback, "; ".join(failures), 0.0)
        return ticked.model_copy(update={"failed_checks": count}), Action(
            ActionKind.halt, f"check failed ({count}/{config.failure_threshold}): " + "; ".join(failures)
        )
    if state.step + 1 >= len(config.steps):
        return ticked.model_copy(update={"phase": Phase.promoted}), Action(
            ActionKind.promote, "all steps healthy", 100.0
        )
    advanced = ticked.model_copy(update={"step": state.step + 1})
    return advanced, Action(ActionKind.set_weight, "step healthy", config.steps[state.step + 1])
