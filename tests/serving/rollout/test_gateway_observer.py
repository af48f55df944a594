from __future__ import annotations

from serving.metrics.stats import RequestStats
from serving.metrics.window import RecentRequests
from serving.rollout.gateway_observer import GatewayObserver


def record(recent: RecentRequests, version: str, status: int, ttft: bool = True) -> None:
    stats = RequestStats(route="r", model="m", version=version)
    if ttft:
        stats.token_arrived()
    stats.finish(status)
    recent.add(stats)


async def test_server_errors_count_client_errors_do_not():
    recent = RecentRequests()
    for status in (200, 200, 500, 400, 503):
        record(recent, "canary", status)
    record(recent, "primary", 200)
    observation = await GatewayObserver(recent).observe("r", "primary", "canary", window_s=60)
    assert observation.canary.requests == 5
    assert observation.canary.server_errors == 2
    assert observation.canary.ttft_p95_s is not None
    assert observation.primary.requests == 1


async def test_other_routes_and_old_requests_are_outside_the_window():
    recent = RecentRequests()
    record(recent, "canary", 200)
    observation = await GatewayObserver(recent).observe("elsewhere", "primary", "canary", window_s=60)
    assert observation.canary.requests == 0 and observation.canary.ttft_p95_s is None
    assert (await GatewayObserver(recent).observe("r", "primary", "canary", window_s=0)).canary.requests == 0
