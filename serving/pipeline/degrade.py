"""The degradation ladder: under overload a route gives up quality before it gives up requests.

Each route lists its steps in `servekit.yaml` (`degrade:`), gentlest first: cap new requests' `max_tokens`, send
a share of them to a cheaper version, shed callers below a priority, shed every new request. A step is entered
when its signal has stayed over its level for a while and left, with everything above it, once the signal has
stayed under a lower level for a while (hysteresis), so the route does not flap. Steps act on new requests
only: a request already running is never touched."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge

from serving.errors import OverloadedError
from serving.pipeline.principal import Principal
from serving.protocol import ModelRequest
from serving.settings import DegradeStep
from serving.versions import ServedVersion, ServedVersions

logger = logging.getLogger(__name__)

Signals = Mapping[str, float | None]
"""in_flight, waiting, ttft_p95_s of one route (None: not known now)."""
SignalSource = Callable[[str], Awaitable[Signals]]
SHED_RETRY_AFTER_S = 2


class Ladder:
    """One route's steps and how far up it is (`level` steps active)."""

    def __init__(self, route: str, steps: list[DegradeStep]) -> None:
        self.route = route
        self.steps = steps
        self.level = 0
        self._over_since: float | None = None
        self._under_since: float | None = None

    @property
    def active(self) -> list[DegradeStep]:
        return self.steps[: self.level]

    def update(self, signals: Signals, now: float) -> None:
        """Climb one step when the next step's signal has held over its level for `enter_s`; else come down one
        when the top step's signal has stayed under its exit level for `exit_s`."""
        if self.level < len(self.steps) and _over(self.steps[self.level], signals):
            self._over_since = now if self._over_since is None else self._over_since
            if now - self._over_since >= self.steps[self.level].enter_s:
                self._move(+1, signals)
            return
        self._over_since = None
        if self.level == 0:
            return
        top = self.steps[self.level - 1]
        value = signals.get(top.signal)
        if value is not None and value >= top.over * top.exit_ratio:
            self._under_since = None
            return
        self._under_since = now if self._under_since is None else self._under_since
        if now - self._under_since >= top.exit_s:
            self._move(-1, signals)

    def _move(self, by: int, signals: Signals) -> None:
        step = self.steps[self.level if by > 0 else self.level - 1]
        self.level += by
        self._over_since = self._under_since = None
        verb = "entered" if by > 0 else "left"
        logger.warning(
            "route %s %s degradation step %d (%s on %s %s, level %g)",
            self.route, verb, self.level if by > 0 else self.level + 1, step.action, step.signal,
            signals.get(step.signal), step.over,
        )  # fmt: skip


def _over(step: DegradeStep, signals: Signals) -> bool:
    value = signals.get(step.signal)
    return value is not None and value > step.over


class Degrader:
    def __init__(
        self,
        ladders: Mapping[str, list[DegradeStep]],
        signals: SignalSource,
        registry: CollectorRegistry,
        interval_s: float = 1.0,
    ) -> None:
        self.ladders = {route: Ladder(route, steps) for route, steps in ladders.items() if steps}
        self.signals = signals
        self.interval_s = interval_s
        self.step = Gauge(
            "servekit_degradation_step", "Degradation steps a route has entered (0: normal).", ("route",),
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        for route in self.ladders:
            self.step.labels(route).set(0)
        self._task: asyncio.Task[None] | None = None

    def apply(
        self, body: ModelRequest, principal: Principal, served: ServedVersion, versions: ServedVersions
    ) -> tuple[ServedVersion, list[str]]:
        """The version that serves a new request on a degraded route and the steps that changed it; a step that
        sheds it raises 503 `overloaded` with Retry-After."""
        ladder = self.ladders.get(body.model)
        if ladder is None or not ladder.level:
            return served, []
        applied = []
        for step in reversed(ladder.active):  # the harshest first: a shed request costs nothing more
            if step.action == "shed_all":
                raise OverloadedError(
                    f"`{body.model}` is overloaded and sheds new requests; retry shortly.",
                    retry_after_s=SHED_RETRY_AFTER_S,
                )
            if step.action == "shed_priority" and principal.priority < (step.below_priority or 0):
                raise OverloadedError(
                    f"`{body.model}` is overloaded and serves callers of priority {step.below_priority} and up "
                    f"only (key `{principal.key_id}` has {principal.priority}); retry shortly.",
                    retry_after_s=SHED_RETRY_AFTER_S,
                )
            if step.action == "fallback" and step.to and random.random() < step.share:
                served = versions.resolve(step.to)
                applied.append("fallback")
            if step.action == "cap_tokens" and step.max_tokens and body.cap_output(step.max_tokens):
                applied.append("cap_tokens")
        return served, applied

    async def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for route, ladder in self.ladders.items():
            ladder.update(await self.signals(route), now)
            self.step.labels(route).set(ladder.level)

    def status(self) -> dict[str, dict[str, object]]:
        """Per route: how many steps are active and which."""
        return {
            r: {"step": ladder.level, "active": [s.action for s in ladder.active]} for r, ladder in self.ladders.items()
        }

    def start(self) -> None:
        if self.ladders and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="degradation-ladders")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a signal that cannot be read this time must not end the ladder
                logger.exception("degradation ladders: reading the signals failed")
            await asyncio.sleep(self.interval_s)
