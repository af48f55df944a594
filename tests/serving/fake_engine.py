"""An in-memory engine for unit tests of the gateway and its API (routing, streams, on-demand engines, rollouts); the
real engines are covered by the end-to-end tests beside them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serving.backends.base import Backend, ChunkStream, Endpoint
from serving.backends.supervisor import EngineSupervisor
from serving.errors import EngineUnavailableError
from serving.gateway import Gateway
from serving.registry.store import RegisteredModel
from serving.router.router import Router, embedded_router
from serving.settings import EngineSettings, StateSettings, WarmupSettings
from serving.state import connect
from serving.state.shared import SharedState
from serving.versions import LoraCapacity, ServedVersion

FAST = EngineSettings(health_interval_s=0.01, restart_backoff_s=0.01, startup_timeout_s=5)
"""Supervision settings that notice a fake engine's health at once."""
USAGE = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
ROLE_CHUNK = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
TOKEN_CHUNK = b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}'
USAGE_CHUNK = b'{"choices":[],"usage":' + json.dumps(USAGE, separators=(",", ":")).encode() + b"}"


class ListedChunks(ChunkStream):
    """A stream of the given chunks, then optionally a failure; remembers being closed."""

    def __init__(self, *chunks: bytes, fail: Exception | None = None) -> None:
        self.chunks, self.fail, self.closed = chunks, fail, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closed = True


class FakeEngine(Backend):
    """Healthy once `healthy` is set; `crash` makes the process exit right after start."""

    engine_name = "fake"

    def __init__(self, name: str, healthy: asyncio.Event, crash: bool = False) -> None:
        super().__init__(name)
        self.healthy = healthy
        self.crash = crash
        self.running = False
        self.starts = 0
        self.adapters: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        """What each completion asked the engine for."""
        self.endpoints: list[Endpoint] = []
        self.refuse = False
        """Refuse every request as an engine that is gone does (connection refused)."""
        self.streams: list[ChunkStream] = []
        """Streams the next `open_stream` calls return, in order (then the usual three chunks)."""

    @property
    def managed(self) -> bool:
        return True

    async def start(self) -> None:
        self.starts += 1
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def exited(self) -> bool:
        return self.crash and self.starts > 0

    async def is_healthy(self) -> bool:
        return self.running and not self.crash and self.healthy.is_set()

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise EngineUnavailableError(f"engine unreachable: {self.served_name} refused the connection")
        self.payloads.append(payload)
        self.endpoints.append(endpoint)
        return {"choices": [{"message": {"content": "hi"}}], "usage": USAGE}

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> ChunkStream:
        if self.refuse:
            raise EngineUnavailableError(f"engine unreachable: {self.served_name} refused the connection")
        self.payloads.append(payload)
        self.endpoints.append(endpoint)
        return self.streams.pop(0) if self.streams else ListedChunks(ROLE_CHUNK, TOKEN_CHUNK, USAGE_CHUNK)

    async def load_adapter(self, name: str, path: str) -> None:
        self.adapters.append(name)

    async def unload_adapter(self, name: str) -> None:
        self.adapters.remove(name)

    async def metrics_text(self) -> str:
        return ""

    def log_tail(self) -> str:
        return "loading weights\n\nRuntimeError: not enough memory for the KV cache\n"

    async def aclose(self) -> None:
        pass


def served_version(
    name: str, healthy: asyncio.Event | None = None, version: str = "v1", replicas: int = 1
) -> ServedVersion:
    """`name` served from registry version `name:version` on `replicas` fake engines, healthy at once unless
    given an event to set later."""
    if healthy is None:
        healthy = asyncio.Event()
        healthy.set()
    model = RegisteredModel(f"{name}:{version}", Path(f"/m/{name}"), {"kind": "base"}, {})
    engines = [EngineSupervisor(FakeEngine(name, healthy), FAST, WarmupSettings()) for _ in range(replicas)]
    return ServedVersion(name, model, engines[0], 2048, name, replicas=engines)


def adapter_of(base: ServedVersion, name: str) -> ServedVersion:
    """An adapter riding on `base` (as `serving.versions.adapter_version` makes one)."""
    model = RegisteredModel(f"{name}:v1", Path(f"/a/{name}"), {"kind": "adapter", "base": base.version}, {})
    return ServedVersion(model.tag, model, base.supervisor, 2048, model.tag, parent=base.name, replicas=base.replicas)


async def started_gateway(
    state_path: Path, *names: str, max_in_flight: int = 0, state: StateSettings | None = None
) -> Gateway:
    """A gateway serving `names` (each from `name:v1`) on fake engines, every one warm; its routes in the SQLite
    file at `state_path`, or in the shared state `state` (a replica)."""
    versions = [served_version(name) for name in names]
    shared = SharedState.open(state) if state is not None else None
    router = Router(shared.records(), {}, {}) if shared is not None else embedded_router(connect(state_path), {})
    gateway = Gateway(versions, router, lora=LoraCapacity(16), max_in_flight=max_in_flight, shared=shared)
    gateway.start()
    for version in versions:
        await version.supervisor.wait_ready(5)
    return gateway
