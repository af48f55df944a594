"""The engines behind the served versions: start and stop, readiness, in-flight slots, on-demand engines.

Bases from the config are started with the gateway; on-demand ones (`serving.on_demand`) join and leave while
it serves. Adapters ride on their base's engine and are loaded onto it again whenever it restarts.

The seam for replica pools: `admit` picks the engine that takes a request and `backend` hands it out (one
engine per base version today)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Iterable

from serving.backends.base import Backend
from serving.backends.factory import create_backend, max_model_len, ports_needed, supervision_settings
from serving.backends.ports import free_port_block
from serving.backends.supervisor import EngineSupervisor
from serving.errors import OverloadedError
from serving.metrics.prometheus import GatewayMetrics
from serving.protocol import EngineStatus
from serving.registry.store import RegisteredModel
from serving.settings import Settings
from serving.versions import ServedVersion, ServedVersions

logger = logging.getLogger(__name__)


def managed_engine(
    settings: Settings, name: str, engine: str, model: RegisteredModel, port: int | None
) -> ServedVersion:
    """`model` served as `name` by a managed engine of kind `engine` (not started yet)."""
    backend = create_backend(settings, engine, model.path, name, port)
    supervisor = EngineSupervisor(backend, supervision_settings(settings, engine), settings.warmup)
    return ServedVersion(name, model, supervisor, max_model_len(settings, engine), name)


def on_demand_engine(settings: Settings, name: str, model: RegisteredModel) -> ServedVersion:
    """An engine like the configured base's (same engine args), on free ports picked now."""
    engine = settings.on_demand.engine or settings.model.engine
    return managed_engine(settings, name, engine, model, free_port_block(ports_needed(engine), settings.engine.host))


class Engines:
    def __init__(
        self,
        versions: ServedVersions,
        configured: Iterable[ServedVersion],
        metrics: GatewayMetrics,
        max_in_flight: int = 0,
    ) -> None:
        self.versions = versions
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        """Requests one engine takes at once before the next is shed (0: no cap)."""
        self.bases: dict[str, ServedVersion] = {}
        self.in_flight: collections.Counter[str] = collections.Counter()
        self._idle: dict[str, asyncio.Event] = {}
        configured = list(configured)
        self.configured = frozenset(base.name for base in configured)
        """Bases from the config: never retired, and always part of /ready."""
        for base in configured:
            self.add(base)

    def start(self) -> None:
        for base in self.bases.values():
            base.supervisor.start()

    async def stop(self) -> None:
        for idle in self._idle.values():
            idle.set()  # shutting down: engines being retired need not wait for their requests
        await asyncio.gather(*(base.supervisor.stop() for base in self.bases.values()))

    def ready(self, routed: set[str]) -> bool:
        """Every configured engine up and warm, and every on-demand one in `routed`."""
        return all(b.supervisor.ready for name, b in self.bases.items() if name in self.configured or name in routed)

    def states(self) -> dict[str, str]:
        return {name: str(base.supervisor.state) for name, base in self.bases.items()}

    def report(self) -> list[EngineStatus]:
        now = time.monotonic()
        return [
            EngineStatus(
                name=name,
                version=base.version,
                state=str(base.supervisor.state),
                state_for_s=round(now - base.supervisor.state_since, 1),
                restarts=base.supervisor.restarts,
                on_demand=name not in self.configured,
                last_error=base.supervisor.last_error,
            )
            for name, base in self.bases.items()
        ]

    async def metrics_texts(self) -> list[str]:
        return list(await asyncio.gather(*(b.supervisor.backend.metrics_text() for b in self.bases.values())))

    def admit(self, served: ServedVersion) -> str:
        """Count a request against its engine; refused at once when the engine is not ready or full."""
        if not served.supervisor.ready:
            raise served.supervisor.unavailable()
        engine = served.engine
        if self.max_in_flight and self.in_flight[engine] >= self.max_in_flight:
            raise OverloadedError(
                f"Engine `{engine}` is at its limit of {self.max_in_flight} requests in flight; retry shortly.",
                retry_after_s=1,
            )
        self.in_flight[engine] += 1
        self.metrics.in_flight.labels(served.model.name, served.version).inc()
        return engine

    def release(self, served: ServedVersion, engine: str) -> None:
        self.in_flight[engine] -= 1
        if self.in_flight[engine] == 0 and (idle := self._idle.get(engine)) is not None:
            idle.set()
        self.metrics.in_flight.labels(served.model.name, served.version).dec()

    def backend(self, served: ServedVersion, engine: str) -> Backend:
        """The engine admitted for `served` (the seam for replica pools: `admit` will pick one of several)."""
        return served.supervisor.backend

    def add(self, base: ServedVersion) -> None:
        base.supervisor.ready_hooks.append(functools.partial(self._reload_adapters, base))
        self.bases[base.name] = base
        self.versions.add(base)

    def drop(self, name: str) -> ServedVersion:
        """Take a base and the adapters riding on it out of the served set."""
        for adapter in self.versions.riding_on(name):
            self.versions.remove(adapter.name)
        self.versions.remove(name)
        return self.bases.pop(name)

    async def drained(self, name: str, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until `name`'s engine has no request in flight, or the gateway stops."""
        if self.in_flight[name] == 0:
            return
        idle = self._idle[name] = asyncio.Event()
        logger.info("engine %s waits for %d requests in flight", name, self.in_flight[name])
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), timeout_s)
        finally:
            self._idle.pop(name, None)

    async def load_adapter(self, served: ServedVersion) -> None:
        """Serve the admitted adapter `served` on its base's engine; nothing is left served on failure."""
        self.versions.add(served)
        try:
            if not served.supervisor.ready:
                raise served.supervisor.unavailable()
            await served.supervisor.backend.load_adapter(served.engine_model, str(served.model.path))
        except Exception:
            self.versions.remove(served.name)
            raise
        logger.info("loaded adapter %s on %s", served.name, served.parent)

    async def unload_adapter(self, served: ServedVersion) -> None:
        self.versions.remove(served.name)
        if served.supervisor.ready:
            await served.supervisor.backend.unload_adapter(served.engine_model)
        logger.info("unloaded adapter %s", served.name)

    async def _reload_adapters(self, base: ServedVersion) -> None:
        """A (re)started engine knows no adapters: load every admitted one before traffic comes back."""
        for served in self.versions.riding_on(base.name):
            await base.supervisor.backend.load_adapter(served.engine_model, str(served.model.path))
