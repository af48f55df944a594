"""The shared state's health: error series from the start, back-off after a failure, one log line per outage."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from serving.state.health import OPERATIONS, StateHealth
from tests.conftest import ManualClock


def errors(registry: CollectorRegistry, operation: str) -> float | None:
    return registry.get_sample_value("servekit_state_errors_total", {"operation": operation})


def test_every_operation_is_exported_at_zero_before_the_first_outage():
    registry = CollectorRegistry()
    StateHealth("redis://r:6379/0", 1.0, registry)
    assert {operation: errors(registry, operation) for operation in OPERATIONS} == dict.fromkeys(OPERATIONS, 0.0)


def test_a_failure_backs_off_for_retry_s_counting_what_it_skips_and_logs_once_per_outage(caplog):
    registry, clock = CollectorRegistry(), ManualClock()
    health = StateHealth("redis://r:6379/0", 1.0, registry, clock)
    with caplog.at_level(logging.WARNING, logger="servekit.state"):
        health.failed("keys", ConnectionError("refused"))
        assert not health.available("ratelimit")  # within retry_s: not tried, counted
        health.failed("keys", ConnectionError("refused"))
        clock.now += 1.0
        assert health.available("ratelimit")  # one call may probe again
        health.succeeded()
    assert (errors(registry, "keys"), errors(registry, "ratelimit")) == (2.0, 1.0)
    assert [record.message.split(" (")[0] for record in caplog.records] == [
        "shared state redis://r:6379/0 unreachable",
        "shared state redis://r:6379/0 reachable again",
    ]
