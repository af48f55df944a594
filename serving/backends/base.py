"""The interface every engine implements, whether it runs as servekit's child process or at a remote URL."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from serving.backends.process import ManagedProcess
from serving.settings import EngineSettings, Settings

Endpoint = Literal["chat/completions", "completions", "responses", "embeddings", "tokenize", "detokenize"]
COMPLETION_ENDPOINTS: tuple[Endpoint, ...] = ("chat/completions", "completions")
"""What every engine serves; the others are vLLM's server's, passed through where the engine has them."""


def endpoint_path(endpoint: Endpoint) -> str:
    """The OpenAI path of an endpoint: vLLM serves `tokenize` and `detokenize` outside `/v1`."""
    return f"/{endpoint}" if endpoint in ("tokenize", "detokenize") else f"/v1/{endpoint}"


class ChunkStream(ABC):
    """An opened streaming response: the engine already accepted the request, so errors that belong to the
    request (bad params, context length) were raised by `Backend.open_stream`, before any byte went out."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield each SSE `data:` payload (a JSON chunk, as bytes), without the terminal `[DONE]`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the stream; the engine aborts the request (this is how client disconnects propagate)."""

    async def raw(self) -> AsyncIterator[bytes]:
        """The SSE bytes in whatever pieces they came, for a reader that only keeps them (a shadow copy): no
        per-event work. By default each payload framed again."""
        async for data in self:
            yield b"data: " + data + b"\n\n"


class Backend(ABC):
    """One engine serving one model version under `served_name`."""

    engine_name: str
    ports_needed: ClassVar[int] = 1
    """Consecutive ports a managed engine of this kind listens on (one block, picked for an on-demand engine)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, model_path: Path, served_name: str, log_path: Path, port: int | None
    ) -> Backend:
        """An engine of this kind serving `model_path` as `served_name`; `port` is the first of its
        `ports_needed` ports (None: the ports configured for this kind). Engine kinds the factory maps implement
        it; test doubles, built directly, need not."""
        raise NotImplementedError(f"{cls.__name__} is not built from settings")

    @classmethod
    def max_model_len(cls, settings: Settings) -> int:
        """The context length an engine of this kind is configured for."""
        return settings.engine.max_model_len

    @classmethod
    def supervision_settings(cls, settings: Settings) -> EngineSettings:
        """Health/start-up timing its supervisor uses."""
        return settings.engine

    def __init__(self, served_name: str) -> None:
        self.served_name = served_name
        self._process: ManagedProcess | None = None
        """The engine child, for backends that start one (None for a remote engine or before start)."""

    @property
    @abstractmethod
    def managed(self) -> bool:
        """True when servekit owns the engine process (and may restart it); False for a remote URL."""

    @abstractmethod
    async def start(self) -> None:
        """Launch the engine (a no-op for a remote engine). Returns without waiting for it to be healthy."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the engine cleanly; safe to call when it is not running."""

    def exited(self) -> bool:
        """True when a managed engine process has died (checked without I/O)."""
        return self._process is not None and self._process.exited()

    @abstractmethod
    async def is_healthy(self) -> bool:
        """One health probe of the engine's server."""

    @abstractmethod
    async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming completion; raises `ServekitError` subclasses for engine-side failures."""

    @abstractmethod
    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any]) -> ChunkStream:
        """Start a streaming completion and return its chunks."""

    @abstractmethod
    async def load_adapter(self, name: str, path: str) -> None:
        """Serve the LoRA adapter at `path` under model name `name`, without restarting the engine."""

    @abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Stop serving adapter `name`; requests already running on it finish first (engine's guarantee)."""

    @abstractmethod
    async def metrics_text(self) -> str:
        """The engine's own Prometheus series (exposition format), or "" when unavailable."""

    def log_tail(self) -> str:
        """The last lines of a managed engine's log, for operators (never sent to clients)."""
        return self._process.tail_log() if self._process else ""

    @abstractmethod
    async def aclose(self) -> None:
        """Release client resources (connection pools)."""
