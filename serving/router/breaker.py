"""Circuit breakers per served version: after N engine failures in a row a version stops getting traffic for
`open_s`; then one probe request may pass (half-open) and its outcome closes or re-opens the breaker.

Only engine-side failures count (5xx from the engine, a lost engine, an injected fault); client errors and the
gateway's own load shedding do not, so a burst of bad requests cannot trip a healthy version."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    threshold: int
    open_s: float
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = field(default=False)

    def allow(self) -> bool:
        """May a request go to this version now? In half-open state only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.open_s:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_after_s(self) -> float:
        return max(0.0, self.open_s - (self.clock() - self.opened_at))

    def record(self, ok: bool | None) -> None:
        """`ok`: the engine answered (True), failed (False), or the request never tested it (None)."""
        if ok is None:
            self.probing = False
            return
        if ok:
            self.state, self.failures, self.probing = BreakerState.CLOSED, 0, False
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state, self.opened_at, self.probing = BreakerState.OPEN, self.clock(), False


class Breakers:
    """One breaker per version name, created on first use; `threshold` 0 turns them all off."""

    def __init__(self, threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self.clock = clock
        self._by_version: dict[str, CircuitBreaker] = {}

    def get(self, version: str) -> CircuitBreaker | None:
        if self.threshold <= 0:
            return None
        if version not in self._by_version:
            self._by_version[version] = CircuitBreaker(self.threshold, self.open_s, self.clock)
        return self._by_version[version]

    def allow(self, version: str) -> bool:
        breaker = self.get(version)
        return breaker is None or breaker.allow()

    def record(self, version: str, ok: bool | None) -> None:
        if (breaker := self.get(version)) is not None:
            breaker.record(ok)

    def states(self) -> dict[str, str]:
        return {version: str(b.state) for version, b in self._by_version.items()}
