"""Supervisor logic against a scripted in-memory backend (the real engine is covered by the e2e tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.backends.base import Backend, ChunkStream, Endpoint
from serving.backends.supervisor import EngineState, EngineSupervisor
from serving.errors import EngineError
from serving.settings import WarmupSettings
from tests.serving.fake_engine import FAST


class ScriptedBackend(Backend):
    engine_name = "scripted"

    def __init__(self, healthy_after_probes: int = 2, warmups_failing: int = 0) -> None:
        super().__init__("m")
        self.starts = 0
        self.probes = 0
        self.healthy_after_probes = healthy_after_probes
        self.warmups_failing = warmups_failing
        self.dead = False
        self.warmup_payloads: list[dict[str, Any]] = []

    @property
    def managed(self) -> bool:
        return True

    async def start(self) -> None:
        self.starts += 1
        self.dead = False
        self.probes = 0

    async def stop(self) -> None:
        self.dead = True

    def exited(self) -> bool:
        return self.dead

    async def is_healthy(self) -> bool:
        self.probes += 1
        return not self.dead and self.probes > self.healthy_after_probes

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        self.warmup_payloads.append(payload)
        if self.warmups_failing > 0:
            self.warmups_failing -= 1
            raise EngineError("warm-up failed")
        return {"choices": [{"message": {"content": "hello"}}]}

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> ChunkStream:
        raise NotImplementedError

    async def load_adapter(self, name: str, path: str) -> None:
        raise NotImplementedError

    async def unload_adapter(self, name: str) -> None:
        raise NotImplementedError

    async def metrics_text(self) -> str:
        return ""

    async def aclose(self) -> None:
        pass


async def test_ready_only_after_health_and_a_real_warmup_generation():
    backend = ScriptedBackend()
    supervisor = EngineSupervisor(backend, FAST, WarmupSettings())
    assert supervisor.unavailable().status_code == 503
    supervisor.start()
    await supervisor.wait_ready(5)
    assert supervisor.state is EngineState.ready
    assert backend.warmup_payloads[0]["messages"][0]["content"] == WarmupSettings().prompt
    await supervisor.stop()
    assert supervisor.state is EngineState.stopped


async def test_failed_warmup_restarts_the_engine():
    backend = ScriptedBackend(warmups_failing=1)
    supervisor = EngineSupervisor(backend, FAST, WarmupSettings())
    supervisor.start()
    await supervisor.wait_ready(5)
    assert backend.starts == 2
    assert supervisor.restarts == 1
    await supervisor.stop()


async def test_dead_engine_goes_down_then_comes_back():
    backend = ScriptedBackend(healthy_after_probes=0)
    supervisor = EngineSupervisor(backend, FAST, WarmupSettings())
    supervisor.start()
    await supervisor.wait_ready(5)
    backend.dead = True
    for _ in range(100):
        if not supervisor.ready:
            break
        await asyncio.sleep(0.01)
    assert not supervisor.ready
    await supervisor.wait_ready(5)
    assert backend.starts == 2
    await supervisor.stop()
