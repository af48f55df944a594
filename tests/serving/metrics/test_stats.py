from __future__ import annotations

from types import SimpleNamespace

import pytest

from serving.metrics import stats as stats_module
from serving.metrics.stats import RequestStats
from tests.conftest import ManualClock


@pytest.fixture
def clock(monkeypatch) -> ManualClock:
    clock = ManualClock()
    monkeypatch.setattr(stats_module, "time", SimpleNamespace(perf_counter=clock))
    return clock


def test_first_token_sets_ttft_and_later_ones_the_gaps_between_them(clock):
    stats = RequestStats(route="chat", started=clock())
    assert stats.time_to_first_token_s is None
    for at in (0.25, 0.30, 0.40, 0.45):
        clock.now = at
        stats.token_arrived()
    assert stats.time_to_first_token_s == 0.25
    assert stats.inter_token_latencies == pytest.approx([0.05, 0.10, 0.05])


def test_duration_runs_until_finished_then_stops(clock):
    stats = RequestStats(route="chat", started=clock())
    clock.now = 1.5
    assert stats.duration_s == 1.5
    stats.finish(503)
    clock.now = 9.0
    assert (stats.duration_s, stats.status) == (1.5, 503)
