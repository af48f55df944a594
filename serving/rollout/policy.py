"""The canary decision as a pure function: (state, observation, config) -> (new state, action).

In the spirit of Flagger's canary analysis: each tick judges the current step; too little data halts the
step (never fails it), and so does a comparison with the primary that cannot be made; a failed check counts
towards `failure_threshold`, after which the canary is rolled back; a healthy last step promotes it
(primary := canary at 100%). Nothing is promoted on data that was not there."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from serving.rollout.observation import Observation, VersionStats


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


class PrimaryReference(BaseModel):
    """The primary's figures from the last window in which it had traffic: what a canary holding all of the
    route's traffic (weight 100) is compared with."""

    stats: VersionStats
    tick: int


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
    primary_reference: PrimaryReference | None = None

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


def answered(stats: VersionStats) -> bool:
    """Whether `stats` has latency figures to compare: some requests in the window were answered."""
    return bool(stats.latency_p95_s)


def judge(canary: VersionStats, primary: VersionStats, config: RolloutConfig) -> tuple[list[str], str | None]:
    """(checks the canary fails, why a comparison with the primary cannot be made, if so): the absolute error
    rate, then the latency p95 ratio, and the TTFT p95 ratio wherever streamed requests give TTFTs (with no
    stream on either side there is no TTFT to compare, which is no missing data)."""
    failures = []
    if (rate := canary.error_rate) is not None and rate > config.max_error_rate:
        failures.append(f"error rate {rate:.3f} > {config.max_error_rate}")
    if not answered(primary):
        return failures, f"no primary data ({primary.requests} primary requests, none answered)"
    if not answered(canary):
        return failures, f"no canary data ({canary.requests} canary requests, none answered)"
    ratios = [("latency p95", canary.latency_p95_s, primary.latency_p95_s, config.max_latency_p95_ratio)]
    if (canary.ttft_p95_s is None) != (primary.ttft_p95_s is None):
        side = "primary" if primary.ttft_p95_s is None else "canary"
        return failures, f"no {side} TTFT data (only the other side had streamed requests)"
    if canary.ttft_p95_s and primary.ttft_p95_s:
        ratios.insert(0, ("TTFT p95", canary.ttft_p95_s, primary.ttft_p95_s, config.max_ttft_p95_ratio))
    for label, mine, theirs, limit in ratios:
        if (ratio := mine / theirs) > limit:
            failures.append(f"{label} ratio {ratio:.2f} > {limit} ({mine:.3f}s vs {theirs:.3f}s)")
    return failures, None


def compared_primary(state: RolloutState, observation: Observation) -> tuple[VersionStats, str, RolloutState]:
    """The primary figures this tick compares with, a note on where they come from, and the state keeping the
    last window with primary traffic. At weight 100 the primary gets no traffic: its last such window stands in."""
    primary = observation.primary
    if answered(primary):
        kept = PrimaryReference(stats=primary, tick=state.ticks)
        return primary, "", state.model_copy(update={"primary_reference": kept})
    reference = state.primary_reference
    if state.canary_weight >= 100 and reference is not None:
        return reference.stats, f" (primary: its last window with traffic, tick {reference.tick})", state
    return primary, "", state


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
    primary, source, ticked = compared_primary(ticked, observation)
    failed, missing = judge(observation.canary, primary, config)
    failures = [*gate_failures, *failed]
    if failures:
        count = state.failed_checks + 1
        if count >= config.failure_threshold:
            rolled_back = ticked.model_copy(update={"phase": Phase.rolled_back, "failed_checks": count})
            return rolled_back, Action(ActionKind.rollback, "; ".join(failures) + source, 0.0)
        return ticked.model_copy(update={"failed_checks": count}), Action(
            ActionKind.halt, f"check failed ({count}/{config.failure_threshold}): " + "; ".join(failures) + source
        )
    if missing:
        return ticked, Action(ActionKind.halt, f"cannot compare with the primary: {missing}")
    if state.step + 1 >= len(config.steps):
        return ticked.model_copy(update={"phase": Phase.promoted}), Action(
            ActionKind.promote, "all steps healthy" + source, 100.0
        )
    advanced = ticked.model_copy(update={"step": state.step + 1})
    return advanced, Action(ActionKind.set_weight, "step healthy" + source, config.steps[state.step + 1])
