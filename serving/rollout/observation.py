"""What an observer reports about the primary and the canary over a recent window; policy input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class VersionStats:
    """One version's traffic on one route over the window. Percentiles are None when there is no data."""

    requests: int
    server_errors: int
    ttft_p95_s: float | None
    latency_p95_s: float | None

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Observation:
    primary: VersionStats
    canary: VersionStats
    window_s: float


class Observer(Protocol):
    """Measures a route's versions; `PrometheusObserver` (PromQL) and `GatewayObserver` (in-process)."""

    async def observe(self, route: str, primary: str, canary: str, window_s: float) -> Observation:
        """Stats of `primary` and `canary` (registry versions: the `version` label of servekit's series) for
        requests to `route` over the last `window_s` seconds. Server errors are 5xx responses; client errors
        (4xx) never count against a version."""
        ...
