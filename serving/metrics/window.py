"""The last requests in memory, for questions over a recent window (the in-process canary observer)."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass

from serving.metrics.stats import RequestStats

MAX_SAMPLES = 200_000
MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class Sample:
    at: float
    route: str
    version: str
    status: int
    ttft_s: float | None
    latency_s: float


class RecentRequests:
    def __init__(self, max_samples: int = MAX_SAMPLES, max_age_s: float = MAX_AGE_S) -> None:
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self.max_age_s = max_age_s

    def add(self, stats: RequestStats) -> None:
        now = time.monotonic()
        self._samples.append(
            Sample(now, stats.route, stats.version, stats.status, stats.time_to_first_token_s, stats.duration_s)
        )
        while self._samples and now - self._samples[0].at > self.max_age_s:
            self._samples.popleft()

    def select(self, route: str, version: str, window_s: float) -> list[Sample]:
        since = time.monotonic() - window_s
        return [s for s in self._samples if s.at >= since and s.route == route and s.version == version]

    def select_route(self, route: str, window_s: float) -> list[Sample]:
        """Every version's requests on `route` over the last `window_s`."""
        since = time.monotonic() - window_s
        return [s for s in self._samples if s.at >= since and s.route == route]


def p95(values: list[float]) -> float | None:
    """The 95th percentile of a recent window's values (None when empty, the value itself when alone)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]
