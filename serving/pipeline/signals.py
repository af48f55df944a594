"""What a route's degradation ladder reads: its engines' load (the gateway's own in-flight count, the engines'
`vllm:num_requests_waiting`) and its recent TTFT p95, only the ones its steps use."""

from __future__ import annotations

import asyncio

from serving.gateway import Gateway
from serving.metrics.window import p95
from serving.pipeline.degrade import Signals
from serving.pool.scrape import requests_waiting
from serving.versions import ServedVersion

TTFT_WINDOW_S = 30.0


class RouteSignals:
    def __init__(self, gateway: Gateway, needed: dict[str, set[str]], ttft_window_s: float = TTFT_WINDOW_S) -> None:
        """`needed`: per route, the signals its steps use."""
        self.gateway = gateway
        self.needed = needed
        self.ttft_window_s = ttft_window_s

    async def __call__(self, route: str) -> Signals:
        needed = self.needed.get(route, set())
        table = self.gateway.route(route)
        names = table.versions if table is not None else [route]
        engines = {served.engine for name in names if (served := self.gateway.versions.find(name)) is not None}
        signals: dict[str, float | None] = {}
        if "in_flight" in needed:
            signals["in_flight"] = float(sum(self.gateway.engines.in_flight[engine] for engine in engines))
        if "waiting" in needed:
            bases = [self.gateway.engines.bases[e] for e in engines if e in self.gateway.engines.bases]
            signals["waiting"] = sum(await asyncio.gather(*map(_waiting, bases)))
        if "ttft_p95_s" in needed:
            recent = self.gateway.metrics.recent.select_route(route, self.ttft_window_s)
            signals["ttft_p95_s"] = p95([s.ttft_s for s in recent if s.ttft_s is not None])
        return signals


async def _waiting(base: ServedVersion) -> float:
    """Requests queued in the base's engines (an engine whose page lacks the series counts none)."""
    texts = await asyncio.gather(*(replica.backend.metrics_text() for replica in base.replicas))
    return float(sum(requests_waiting(text) or 0 for text in texts))
