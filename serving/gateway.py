"""The gateway's state: which public model names exist, which version and engine serve each, and metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from serving.backends.supervisor import EngineSupervisor
from serving.backends.vllm import VllmBackend
from serving.errors import ModelNotFoundError
from serving.metrics.prometheus import GatewayMetrics
from serving.protocol import ModelCard, ModelList
from serving.registry.store import RegisteredModel
from serving.settings import Settings


@dataclass
class ServedVersion:
    """A public model name bound to the registry version and the engine that serve it."""

    name: str
    model: RegisteredModel
    supervisor: EngineSupervisor
    max_model_len: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def version(self) -> str:
        return self.model.tag


class Gateway:
    def __init__(self, versions: list[ServedVersion]) -> None:
        self.versions = {served.name: served for served in versions}
        self.metrics = GatewayMetrics()

    @classmethod
    def from_settings(cls, settings: Settings, model: RegisteredModel) -> Gateway:
        backend = VllmBackend(
            settings.engine,
            model_path=model.path,
            served_name=settings.model.name,
            log_path=settings.logs_dir / f"engine-{settings.model.name}.log",
        )
        supervisor = EngineSupervisor(backend, settings.engine, settings.warmup)
        served = ServedVersion(settings.model.name, model, supervisor, settings.engine.max_model_len)
        return cls([served])

    @property
    def ready(self) -> bool:
        return all(served.supervisor.ready for served in self.versions.values())

    def engine_states(self) -> dict[str, str]:
        return {name: str(served.supervisor.state) for name, served in self.versions.items()}

    def start(self) -> None:
        for served in self.versions.values():
            served.supervisor.start()

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.gather(*(s.supervisor.wait_ready(timeout_s) for s in self.versions.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(served.supervisor.stop() for served in self.versions.values()))

    def resolve(self, name: str) -> ServedVersion:
        served = self.versions.get(name)
        if served is None:
            raise ModelNotFoundError(name, sorted(self.versions))
        return served

    def model_list(self) -> ModelList:
        return ModelList(
            data=[
                ModelCard(
                    id=served.name,
                    created=served.created,
                    root=served.version,
                    max_model_len=served.max_model_len,
                    engine=served.supervisor.backend.engine_name,
                    ready=served.supervisor.ready,
                )
                for served in self.versions.values()
            ]
        )

    async def engine_metrics(self) -> list[str]:
        return list(await asyncio.gather(*(s.supervisor.backend.metrics_text() for s in self.versions.values())))
