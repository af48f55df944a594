"""Engines nobody configured: started when a route needs a base version (the change waits for the warm-up),
kept while a change under way or a route uses them, retired once nothing does and their requests finished."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from serving.backends.supervisor import EngineStartError
from serving.engines import Engines, stop_replicas
from serving.errors import EngineStartFailedError, InvalidRequestError
from serving.registry.store import RegisteredModel
from serving.settings import OnDemandSettings
from serving.versions import ServedVersion

logger = logging.getLogger(__name__)

EngineFactory = Callable[[str, RegisteredModel], ServedVersion]
"""Builds the (not yet started) engine for an on-demand base: served name, registry version."""


class OnDemandEngines:
    def __init__(self, engines: Engines, factory: EngineFactory | None, settings: OnDemandSettings) -> None:
        self.engines = engines
        self.factory = factory
        self.settings = settings
        self._held: collections.Counter[str] = collections.Counter()
        self._preparing: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._retiring: dict[str, asyncio.Task[None]] = {}

    def build(self, tag: str, model: RegisteredModel) -> ServedVersion:
        if self.factory is None:
            raise InvalidRequestError(f"`{tag}` is a base version and this gateway starts no engines.", param="version")
        return self.factory(tag, model)

    @contextlib.contextmanager
    def holding(self, versions: Iterable[str]) -> Iterator[None]:
        """Keep `versions` from being retired while a change that needs them is under way."""
        versions = list(versions)
        self._held.update(versions)
        try:
            yield
        finally:
            self._held.subtract(versions)

    def held(self) -> set[str]:
        return {name for name, count in self._held.items() if count > 0}

    @contextlib.asynccontextmanager
    async def preparing(self, tag: str) -> AsyncIterator[None]:
        """One preparation of `tag` at a time, after an engine being retired under that name has stopped."""
        async with self._preparing[tag]:
            if (retiring := self._retiring.get(tag)) is not None:
                await retiring
            yield

    async def start(self, tag: str, model: RegisteredModel) -> ServedVersion:
        """Start an engine for `model` under the name `tag` and wait for its warm-up; on failure, stop it again."""
        served = self.build(tag, model)
        self.engines.add(served)
        logger.info("starting on-demand engine %s for %s", tag, model.tag)
        self.engines.start_base(served)
        timeout_s = self.settings.ready_timeout_s
        engine = served.replicas[0]  # an on-demand base runs one managed engine
        try:
            with self.holding([tag]):  # not retired while it starts, whoever asked for it
                await engine.wait_started(timeout_s)
        except BaseException as exc:
            tail = _summary(engine.backend.log_tail())
            self.engines.drop(tag)
            await stop_replicas(served)
            if isinstance(exc, EngineStartError):
                message = (
                    f"The engine for `{tag}` failed to start ({exc}); the route was left unchanged. Log tail: {tail}"
                )
                raise EngineStartFailedError(message) from exc
            if isinstance(exc, TimeoutError):
                raise EngineStartFailedError(
                    f"The engine for `{tag}` was not warm after {timeout_s:g}s (on_demand.ready_timeout_s); "
                    f"it was stopped and the route left unchanged. Log tail: {tail}"
                ) from exc
            raise
        logger.info("on-demand engine %s ready", tag)
        return served

    def retire_unused(self, in_use: set[str]) -> None:
        """Retire every on-demand engine not in `in_use` (nor held): it leaves the served set at once and is
        stopped in the background once its in-flight requests finished."""
        keep = self.engines.configured | in_use | self.held()
        for name in [n for n in self.engines.bases if n not in keep]:
            served = self.engines.drop(name)
            self._retiring[name] = asyncio.create_task(self._retire(served), name=f"retire-{name}")

    async def _retire(self, served: ServedVersion) -> None:
        try:
            await self.engines.drained(served.name, self.settings.drain_timeout_s)
            await stop_replicas(served)
            logger.info("retired on-demand engine %s", served.name)
        finally:
            self._retiring.pop(served.name, None)

    async def stop(self) -> None:
        """Wait for the engines being retired (the gateway's stop has released their drain waits)."""
        await asyncio.gather(*self._retiring.values())


EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b")


def _summary(log_tail: str, width: int = 300) -> str:
    """The gist of an engine log for an admin's error message: the last exception line and the line after it
    (where vLLM and pydantic put the reason), else the last lines."""
    lines = [line.strip()[:width] for line in log_tail.splitlines() if line.strip()]
    last = max((i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)), default=None)
    kept = lines[last : last + 2] if last is not None else lines[-3:]
    return " | ".join(kept) or "(empty log)"
