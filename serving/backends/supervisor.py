"""Keeps one backend up: start, wait for health, warm up with a real generation, watch, restart with backoff.

Traffic is admitted only in state `ready`, i.e. after a real generation succeeded on the current engine
process; a dead or unhealthy engine turns the state back to `down` within one health interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

from serving.backends.base import Backend
from serving.errors import EngineUnavailableError, ServekitError
from serving.settings import EngineSettings, WarmupSettings

logger = logging.getLogger(__name__)

UNHEALTHY_PROBES_BEFORE_DOWN = 3


class EngineState(enum.StrEnum):
    starting = "starting"
    warming = "warming"
    ready = "ready"
    down = "down"
    stopped = "stopped"


class EngineStartError(Exception):
    pass


class EngineSupervisor:
    def __init__(self, backend: Backend, engine: EngineSettings, warmup: WarmupSettings) -> None:
        self.backend = backend
        self.name = backend.served_name
        """How logs name this engine: its version's name, or its replica's id (`name/1`) when pooled."""
        self.engine = engine
        self.warmup = warmup
        self.state = EngineState.stopped
        self.last_error: str | None = None
        self.restarts = 0
        self.ready_since: float | None = None
        self.state_since = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._ready_event = asyncio.Event()
        self._changed = asyncio.Event()
        self.ready_hooks: list[Callable[[], Awaitable[None]]] = []
        """Run after each warm-up, before traffic is admitted (e.g. re-loading adapters into a fresh engine)."""

    @property
    def ready(self) -> bool:
        return self.state is EngineState.ready

    def start(self) -> None:
        """Begin supervising in the background; returns at once so the API can answer 503s meanwhile."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._ready_event.wait(), timeout_s)

    async def wait_started(self, timeout_s: float) -> None:
        """Wait for the first warm-up; raise as soon as the engine goes down instead of waiting out restarts
        (for an engine started on demand, whose caller gives up and stops it)."""
        async with asyncio.timeout(timeout_s):
            while True:
                changed = self._changed
                if self.state is EngineState.ready:
                    return
                if self.state is EngineState.down:
                    raise EngineStartError(self.last_error or "engine down")
                await changed.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state(EngineState.stopped)
        await self.backend.stop()
        await self.backend.aclose()

    def unavailable(self) -> EngineUnavailableError:
        detail = f"; last error: {self.last_error}" if self.last_error else ""
        return EngineUnavailableError(
            f"model `{self.backend.served_name}` is not ready (engine {self.state}){detail}",
            retry_after_s=self.warmup.retry_after_s,
        )

    async def _supervise(self) -> None:
        backoff = self.engine.restart_backoff_s
        while True:
            try:
                await self._bring_up()
                backoff = self.engine.restart_backoff_s
                await self._watch()
                self.last_error = "engine became unhealthy"
            except (EngineStartError, ServekitError) as exc:
                self.last_error = str(exc)
            self._set_state(EngineState.down)
            logger.error(
                "engine %s down: %s\n--- engine log tail ---\n%s",
                self.name,
                self.last_error,
                self.backend.log_tail(),
            )
            await self.backend.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.engine.max_restart_backoff_s)
            self.restarts += 1

    async def _bring_up(self) -> None:
        self._set_state(EngineState.starting)
        await self.backend.start()
        deadline = time.monotonic() + self.engine.startup_timeout_s
        while not await self.backend.is_healthy():
            if self.backend.exited():
                raise EngineStartError("engine process exited during start-up")
            if time.monotonic() > deadline:
                raise EngineStartError(f"engine not healthy after {self.engine.startup_timeout_s:.0f}s")
            await asyncio.sleep(self.engine.health_interval_s)
        self._set_state(EngineState.warming)
        await self.backend.complete(
            "chat/completions",
            {
                "model": self.backend.served_name,
                "messages": [{"role": "user", "content": self.warmup.prompt}],
                "max_tokens": self.warmup.max_tokens,
                "temperature": 0,
            },
        )
        for hook in self.ready_hooks:
            await hook()
        self.last_error = None
        self._set_state(EngineState.ready)

    async def _watch(self) -> None:
        failures = 0
        while failures < UNHEALTHY_PROBES_BEFORE_DOWN:
            await asyncio.sleep(self.engine.health_interval_s)
            if self.backend.exited():
                return
            failures = 0 if await self.backend.is_healthy() else failures + 1

    def _set_state(self, state: EngineState) -> None:
        if state is not self.state:
            logger.info("engine %s: %s -> %s", self.name, self.state, state)
            self.state_since = time.monotonic()
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        if state is EngineState.ready:
            self.ready_since = time.time()
            self._ready_event.set()
        else:
            self._ready_event.clear()
