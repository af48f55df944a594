"""One place that knows which class runs which engine kind; what a kind needs (ports, context length,
supervision timing) is asked of its class."""

from __future__ import annotations

from pathlib import Path

from serving.backends.base import Backend
from serving.backends.triton.backend import TritonBackend
from serving.backends.vllm import VllmBackend
from serving.settings import EngineSettings, Settings

BACKENDS: dict[str, type[Backend]] = {backend.engine_name: backend for backend in (VllmBackend, TritonBackend)}


def backend_class(engine: str) -> type[Backend]:
    try:
        return BACKENDS[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}") from None


def create_backend(
    settings: Settings, engine: str, model_path: Path, served_name: str, port: int | None, replica: int = 0
) -> Backend:
    """A backend for `engine` serving `model_path` as `served_name`; `port` is the managed engine's own port
    (None: the configured one of that engine kind); `replica` numbers the version's managed engines (its log)."""
    log_path = settings.logs_dir / (
        f"engine-{served_name}.log" if replica == 0 else f"engine-{served_name}-{replica}.log"
    )
    return backend_class(engine).from_settings(settings, model_path, served_name, log_path, port)


def ports_needed(engine: str) -> int:
    """How many consecutive ports a managed engine of this kind takes."""
    return backend_class(engine).ports_needed


def supervision_settings(settings: Settings, engine: str) -> EngineSettings:
    """Health/start-up timing for the supervisor of an engine of this kind."""
    return backend_class(engine).supervision_settings(settings)


def max_model_len(settings: Settings, engine: str) -> int:
    return backend_class(engine).max_model_len(settings)
