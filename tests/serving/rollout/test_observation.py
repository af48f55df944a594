from __future__ import annotations

from serving.rollout.observation import VersionStats


def test_error_rate_is_server_errors_over_requests_and_none_without_traffic():
    assert VersionStats(requests=200, server_errors=3, ttft_p95_s=None, latency_p95_s=None).error_rate == 0.015
    assert VersionStats(requests=0, server_errors=0, ttft_p95_s=None, latency_p95_s=None).error_rate is None
