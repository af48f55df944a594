"""Circuit breaker transitions with a hand-driven clock."""

from __future__ import annotations

from serving.router.breaker import Breakers, BreakerState, CircuitBreaker
from tests.conftest import ManualClock


def test_consecutive_failures_open_it_and_a_success_resets_the_count():
    breaker = CircuitBreaker(threshold=3, open_s=10, clock=ManualClock())
    for outcome in (False, False, True, False, False):
        assert breaker.allow()
        breaker.record(outcome)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN and not breaker.allow()


def test_half_open_lets_one_probe_through_and_its_outcome_decides():
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, open_s=10, clock=clock)
    breaker.record(False)
    clock.now = 9.9
    assert not breaker.allow() and breaker.retry_after_s() > 0
    clock.now = 10.0
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.allow()  # one at a time
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 20.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_a_probe_that_never_reached_the_engine_frees_the_slot():
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, open_s=1, clock=clock)
    breaker.record(False)
    clock.now = 1.0
    assert breaker.allow()
    breaker.record(None)  # shed by the gateway, or the client left
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()


def test_breakers_are_per_version_and_off_with_threshold_zero():
    breakers = Breakers(threshold=1, open_s=5, clock=ManualClock())
    breakers.record("a", False)
    assert not breakers.allow("a") and breakers.allow("b")
    assert breakers.states() == {"a": "open", "b": "closed"}
    off = Breakers(threshold=0, open_s=5)
    off.record("a", False)
    assert off.allow("a") and off.states() == {}
