"""Which version serves a request: the pin header, else the route's sticky weighted choice, else the version
named; a version whose circuit breaker is open hands its route's traffic to the route's fallback."""

from __future__ import annotations

import math

from serving.errors import EngineUnavailableError, OverloadedError, ServekitError
from serving.router.breaker import Breakers
from serving.router.router import Router
from serving.versions import ServedVersion, ServedVersions

CLIENT_CLOSED_REQUEST = 499


class VersionChoice:
    def __init__(self, router: Router, versions: ServedVersions, breakers: Breakers, fallbacks: dict[str, str]) -> None:
        self.router = router
        self.versions = versions
        self.breakers = breakers
        self.fallbacks = fallbacks
        """Route -> version taking its traffic while the chosen version's breaker is open."""

    def choose(self, model: str, sticky_key: str | None, pinned: str | None) -> tuple[ServedVersion, bool]:
        """The version that serves a request for `model` (a route or a version name), and whether it is the
        route's fallback because the chosen version's circuit breaker is open."""
        served = self.versions.resolve(self.router.resolve(model, sticky_key, pinned))
        if self.breakers.allow(served.name):
            return served, False
        spare = self.versions.find(self.fallbacks.get(model, ""))
        if spare is not None and self.breakers.allow(spare.name):
            return spare, True
        breaker = self.breakers.get(served.name)
        raise EngineUnavailableError(
            f"`{served.name}` is failing (circuit breaker open) and `{model}` has no healthy fallback; retry shortly.",
            retry_after_s=max(1, math.ceil(breaker.retry_after_s() if breaker else 1)),
        )

    def settle(self, served: ServedVersion, status: int, error: ServekitError | None = None) -> None:
        """Tell the version's breaker how its request ended."""
        self.breakers.record(served.name, engine_outcome(status, error))


def engine_outcome(status: int, error: ServekitError | None = None) -> bool | None:
    """What a finished request says about its engine, for the circuit breaker: a 5xx is the engine's failure,
    a shed request (the gateway's own limit) or a client that left says nothing."""
    if isinstance(error, OverloadedError) or status == CLIENT_CLOSED_REQUEST:
        return None
    return status < 500
