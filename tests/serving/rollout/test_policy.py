"""The canary policy, tick by tick."""

from __future__ import annotations

from serving.rollout.observation import Observation, VersionStats
from serving.rollout.policy import ActionKind, Phase, RolloutConfig, RolloutState, decide

CONFIG = RolloutConfig(steps=[10, 50, 100], min_requests=10, failure_threshold=2, max_error_rate=0.05)
HEALTHY = VersionStats(requests=40, server_errors=0, ttft_p95_s=0.2, latency_p95_s=1.0)


def observe(canary: VersionStats, primary: VersionStats = HEALTHY) -> Observation:
    return Observation(primary=primary, canary=canary, window_s=30)


def fresh() -> RolloutState:
    return RolloutState(route="assistant", primary="base", canary="new", config=CONFIG)


def test_healthy_canary_walks_every_step_then_is_promoted():
    state, action = decide(fresh(), None)
    assert (state.phase, action.kind, action.canary_weight) == (Phase.progressing, ActionKind.set_weight, 10)
    weights = []
    for _ in range(3):
        state, action = decide(state, observe(HEALTHY))
        weights.append(action.canary_weight)
    assert weights == [50, 100, 100]
    assert action.kind is ActionKind.promote
    assert state.phase is Phase.promoted and state.canary_weight == 100
    assert decide(state, observe(HEALTHY))[1].kind is ActionKind.wait


def test_error_spike_rolls_back_after_the_threshold():
    state, _ = decide(fresh(), None)
    faulty = VersionStats(requests=40, server_errors=10, ttft_p95_s=0.2, latency_p95_s=1.0)
    state, action = decide(state, observe(faulty))
    assert action.kind is ActionKind.halt and state.failed_checks == 1 and state.phase is Phase.progressing
    assert "error rate 0.250" in action.reason
    state, action = decide(state, observe(faulty))
    assert action.kind is ActionKind.rollback and action.canary_weight == 0
    assert state.phase is Phase.rolled_back and state.canary_weight == 0


def test_too_little_data_halts_without_counting_a_failure():
    state, _ = decide(fresh(), None)
    few = VersionStats(requests=3, server_errors=3, ttft_p95_s=None, latency_p95_s=None)
    for observation in (None, observe(few)):
        state, action = decide(state, observation)
        assert action.kind is ActionKind.halt and "not enough data" in action.reason
    assert state.failed_checks == 0 and state.step == 0


def test_latency_ratio_checks_compare_with_the_primary():
    state, _ = decide(fresh(), None)
    slow = VersionStats(requests=40, server_errors=0, ttft_p95_s=0.5, latency_p95_s=1.0)
    state, action = decide(state, observe(slow))
    assert action.kind is ActionKind.halt and "TTFT p95 ratio 2.50" in action.reason


def test_a_failed_gate_counts_like_a_failed_check():
    state, _ = decide(fresh(), None)
    state, action = decide(state, observe(HEALTHY), gate_failures=("gate: load test breached ttft_p95",))
    assert action.kind is ActionKind.halt and state.failed_checks == 1 and "load test" in action.reason


def test_paused_rollouts_do_not_move():
    state, _ = decide(fresh(), None)
    paused = state.model_copy(update={"phase": Phase.paused})
    new_state, action = decide(paused, observe(HEALTHY))
    assert action.kind is ActionKind.wait and new_state.step == paused.step


NOT_STREAMED = VersionStats(requests=40, server_errors=0, ttft_p95_s=None, latency_p95_s=1.0)
SILENT = VersionStats(requests=0, server_errors=0, ttft_p95_s=None, latency_p95_s=None)


def progressing(steps: list[float] = CONFIG.steps, step: int = 0) -> RolloutState:
    config = CONFIG.model_copy(update={"steps": steps})
    return RolloutState(
        route="assistant", primary="base", canary="new", config=config, phase=Phase.progressing, step=step
    )


def test_a_primary_without_data_halts_the_step_never_passes_it():
    for primary in (SILENT, VersionStats(requests=5, server_errors=5, ttft_p95_s=None, latency_p95_s=None)):
        state, action = decide(progressing(), observe(HEALTHY, primary))
        assert action.kind is ActionKind.halt and "no primary data" in action.reason
        assert (state.step, state.failed_checks, state.phase) == (0, 0, Phase.progressing)


def test_an_absolute_check_still_fails_a_canary_when_the_primary_has_no_data():
    faulty = VersionStats(requests=40, server_errors=10, ttft_p95_s=0.2, latency_p95_s=1.0)
    state, action = decide(progressing(), observe(faulty, SILENT))
    assert action.kind is ActionKind.halt and state.failed_checks == 1 and "error rate" in action.reason


def test_ttft_is_compared_only_where_streams_gave_it():
    _, action = decide(progressing(), observe(NOT_STREAMED, NOT_STREAMED))
    assert action.kind is ActionKind.set_weight, "no stream on either side: the latency ratio alone decides"
    _, action = decide(progressing(), observe(HEALTHY, NOT_STREAMED))
    assert action.kind is ActionKind.halt and "no primary TTFT data" in action.reason
    slow = VersionStats(requests=40, server_errors=0, ttft_p95_s=None, latency_p95_s=2.0)
    _, action = decide(progressing(), observe(slow, NOT_STREAMED))
    assert action.kind is ActionKind.halt and "latency p95 ratio 2.00" in action.reason


def test_at_weight_100_the_primarys_last_window_with_traffic_is_the_reference():
    state, action = decide(progressing([50, 100]), observe(HEALTHY))
    assert action.canary_weight == 100 and state.primary_reference.stats == HEALTHY
    reference_tick = state.primary_reference.tick
    _, action = decide(state, observe(HEALTHY, SILENT))
    assert action.kind is ActionKind.promote
    assert f"primary: its last window with traffic, tick {reference_tick}" in action.reason
    slow = VersionStats(requests=40, server_errors=0, ttft_p95_s=0.5, latency_p95_s=1.0)
    state, action = decide(state, observe(slow, SILENT))
    assert action.kind is ActionKind.halt and "TTFT p95 ratio 2.50" in action.reason and state.failed_checks == 1


def test_without_a_reference_a_canary_at_weight_100_halts():
    _, action = decide(progressing([100]), observe(HEALTHY, SILENT))
    assert action.kind is ActionKind.halt and "no primary data" in action.reason
