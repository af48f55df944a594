"""The default observer: the gateway's own recent requests, when no Prometheus is configured."""

from __future__ import annotations

from serving.metrics.window import RecentRequests, Sample, p95
from serving.rollout.observation import Observation, VersionStats

SERVER_ERROR = 500


def version_stats(samples: list[Sample]) -> VersionStats:
    answered = [s for s in samples if s.status < SERVER_ERROR]
    return VersionStats(
        requests=len(samples),
        server_errors=len(samples) - len(answered),
        ttft_p95_s=p95([s.ttft_s for s in answered if s.ttft_s is not None]),
        latency_p95_s=p95([s.latency_s for s in answered if s.status == 200]),
    )


class GatewayObserver:
    def __init__(self, recent: RecentRequests) -> None:
        self.recent = recent

    async def observe(self, route: str, primary: str, canary: str, window_s: float) -> Observation:
        return Observation(
            primary=version_stats(self.recent.select(route, primary, window_s)),
            canary=version_stats(self.recent.select(route, canary, window_s)),
            window_s=window_s,
        )
