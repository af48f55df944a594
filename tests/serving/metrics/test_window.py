from __future__ import annotations

import pytest

from serving.metrics import window
from serving.metrics.stats import RequestStats
from serving.metrics.window import RecentRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(window.time, "monotonic", fake)
    return fake


def finished(route: str, version: str, status: int = 200) -> RequestStats:
    stats = RequestStats(route=route, version=version, started=10.0)
    stats.first_token_at = 10.25
    stats.finished, stats.status = 11.0, status
    return stats


def test_select_keeps_one_route_and_version_within_the_window(clock):
    recent = RecentRequests()
    recent.add(finished("chat", "v1"))
    clock.now += 30
    recent.add(finished("chat", "v1", status=503))
    recent.add(finished("chat", "v2"))
    recent.add(finished("other", "v1"))
    samples = recent.select("chat", "v1", window_s=60)
    assert [s.status for s in samples] == [200, 503]
    assert samples[0].ttft_s == pytest.approx(0.25) and samples[0].latency_s == pytest.approx(1.0)
    assert [s.status for s in recent.select("chat", "v1", window_s=10)] == [503]


def test_memory_is_bounded_by_count_and_by_age(clock):
    recent = RecentRequests(max_samples=3, max_age_s=100)
    for status in (200, 201, 202, 203):
        recent.add(finished("chat", "v1", status))
    assert [s.status for s in recent.select("chat", "v1", 1e9)] == [201, 202, 203]
    clock.now += 150
    recent.add(finished("chat", "v1", 204))  # the older samples are past max_age_s: dropped on the way in
    assert [s.status for s in recent.select("chat", "v1", 1e9)] == [204]
