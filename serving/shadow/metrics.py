"""The `servekit_shadow_*` series, on the gateway's registry so one scrape carries them beside the routes' own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

DROP_REASONS = ("in_flight", "shed", "expired", "duplicate_id")
"""A copy is dropped when K are in flight already, when the server sheds load, when its pair never completes, or
when its request id is one already waiting for its pair."""


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ("route", "version")
        self.mirrored = Counter(
            "servekit_shadow_requests", "Requests copied to a shadow candidate.", labels, registry=registry
        )
        self.dropped = Counter(
            "servekit_shadow_dropped", "Copies not sent or given up, by reason.", (*labels, "reason"),
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "servekit_shadow_errors", "Copies the candidate failed (error status or no answer).", labels,
            registry=registry,
        )  # fmt: skip
        self.pairs = Counter(
            "servekit_shadow_pairs", "Requests answered by both primary and candidate and compared.", labels,
            registry=registry,
        )  # fmt: skip
        self.agreement = Gauge(
            "servekit_shadow_agreement", "Mean token similarity to the primary at temperature 0 (1: identical).",
            labels, registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.exact_match = Gauge(
            "servekit_shadow_exact_match_ratio", "Share of temperature-0 outputs identical to the primary's.",
            labels, registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.in_flight = Gauge(
            "servekit_shadow_in_flight", "Copies in flight now.", labels, registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip

    def expect(self, route: str, version: str) -> None:
        """Every series of a run at zero from its start, so `increase()` counts its first copies."""
        for series in (self.mirrored, self.errors, self.pairs, self.in_flight):
            series.labels(route, version)
        for reason in DROP_REASONS:
            self.dropped.labels(route, version, reason)
