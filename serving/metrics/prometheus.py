"""servekit's Prometheus series, plus the engines' own `vllm:` series on the same scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from serving.metrics.stats import RequestStats
from serving.metrics.window import RecentRequests

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
ENGINE_SERIES_PREFIXES = ("vllm:", "# HELP vllm:", "# TYPE vllm:", "nv_", "# HELP nv_", "# TYPE nv_")
EXPECTED_STATUSES = ("200", "500", "502", "503")
"""Outcomes whose series exist before the first request: success and the server errors servekit answers with."""


class GatewayMetrics:
    """One registry per gateway, so tests and several gateways in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes etc.: what a soak test watches
        GCCollector(registry=self.registry)  # python_gc_collections_total: pauses of the serving process
        self.recent = RecentRequests()
        labels = ("model", "version", "route")
        self.requests = Counter(
            "servekit_requests", "Requests by outcome.", (*labels, "status"), registry=self.registry
        )
        self.duration = Histogram(
            "servekit_request_duration_seconds", "End-to-end request latency.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "servekit_time_to_first_token_seconds", "Time to the first streamed token.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.itl = Histogram(
            "servekit_inter_token_latency_seconds", "Gap between streamed tokens.", labels,
            buckets=TOKEN_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.output_tokens = Counter(
            "servekit_output_tokens", "Completion tokens generated.", labels, registry=self.registry
        )
        self.prompt_tokens = Counter(
            "servekit_prompt_tokens", "Prompt tokens processed.", labels, registry=self.registry
        )
        self.in_flight = Gauge(
            "servekit_in_flight_requests", "Requests being served now.", ("model", "version"),
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip

        self.replica_in_flight = Gauge(
            "servekit_replica_in_flight_requests", "Requests a pool's replica serves now (`base/i`).", ("replica",),
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.replica_requests = Counter(
            "servekit_replica_requests", "Requests by the replica that served them, and outcome.",
            ("version", "replica", "status"), registry=self.registry,
        )  # fmt: skip
        self.replica_ttft = Histogram(
            "servekit_replica_time_to_first_token_seconds", "Time to the first streamed token, by replica.",
            ("version", "replica"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

        self.breaker_open = Gauge(
            "servekit_breaker_open", "1 while a version's circuit breaker is open or half-open.", ("version",),
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip

    def expect(self, model: str, version: str, route: str) -> None:
        """Create a version's series on a route at zero before its first request. Prometheus's `increase()` and
        `rate()` count from a series' first scrape, so without a zero sample the requests before that scrape
        are lost to them: a canary's first errors included."""
        labels = (model, version, route)
        for status in EXPECTED_STATUSES:
            self.requests.labels(*labels, status)
        for series in (self.duration, self.ttft, self.itl, self.output_tokens, self.prompt_tokens):
            series.labels(*labels)

    def record(self, stats: RequestStats) -> None:
        labels = (stats.model, stats.version, stats.route)
        self.recent.add(stats)
        self.requests.labels(*labels, str(stats.status)).inc()
        self.duration.labels(*labels).observe(stats.duration_s)
        if stats.replica:
            self.replica_requests.labels(stats.version, stats.replica, str(stats.status)).inc()
        if stats.status != 200:
            return
        ttft = stats.time_to_first_token_s
        if ttft is not None:
            self.ttft.labels(*labels).observe(ttft)
            if stats.replica:
                self.replica_ttft.labels(stats.version, stats.replica).observe(ttft)
        if stats.inter_token_latencies:
            itl = self.itl.labels(*labels)
            for gap in stats.inter_token_latencies:
                itl.observe(gap)
        self.output_tokens.labels(*labels).inc(stats.completion_tokens)
        self.prompt_tokens.labels(*labels).inc(stats.prompt_tokens)

    def render(self, engine_texts: Iterable[str]) -> bytes:
        """servekit's series followed by each engine's own series (other engine-process series are dropped:
        their `process_*`/`python_*` names would clash with ours)."""
        parts = [generate_latest(self.registry).decode()]
        for text in engine_texts:
            parts.extend(line + "\n" for line in text.splitlines() if line.startswith(ENGINE_SERIES_PREFIXES))
        return "".join(parts).encode()
