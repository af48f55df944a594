"""Is the shared store reachable? One place that counts failures, backs off and logs one line per outage.

Without the back-off every request of an outage would wait on a connect timeout; with it, requests take the
`state.on_unavailable` answer at once for `retry_s`, then one call probes Redis again, so limits are shared
again soon after Redis is back, without a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

logger = logging.getLogger("servekit.state")

OPERATIONS = ("ratelimit", "keys", "routes", "rollouts", "lease")
"""What uses the shared state; each has its error series from the start, so `increase()` sees the first outage."""


class StateHealth:
    def __init__(
        self,
        url: str,
        retry_s: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`registry`: the gateway's metrics registry, which gets `servekit_state_errors_total{operation}`."""
        self.url = url
        self.retry_s = retry_s
        self.clock = clock
        self.down = False
        self._retry_at = 0.0
        self.errors = Counter(
            "servekit_state_errors",
            "Operations that could not use the shared state (Redis), by operation.",
            ("operation",),
            registry=registry,
        )
        for operation in OPERATIONS:
            self.errors.labels(operation)

    def available(self, operation: str) -> bool:
        """False while backing off after a failure; the skipped operation still counts as an error."""
        if self.down and self.clock() < self._retry_at:
            self.errors.labels(operation).inc()
            return False
        return True

    def failed(self, operation: str, error: Exception) -> None:
        self.errors.labels(operation).inc()
        self._retry_at = self.clock() + self.retry_s
        if not self.down:
            self.down = True
            logger.warning("shared state %s unreachable (%s: %s); retrying every %gs", self.url,
                           type(error).__name__, error, self.retry_s)  # fmt: skip

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            logger.warning("shared state %s reachable again", self.url)
