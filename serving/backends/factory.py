"""One place that knows which class runs which engine kind."""

from __future__ import annotations

from pathlib import Path

from serving.backends.base import Backend
from serving.backends.triton import TritonBackend
from serving.backends.vllm import VllmBackend
from serving.settings import EngineSettings, Settings


def create_backend(settings: Settings, engine: str, model_path: Path, served_name: str, port: int | None) -> Backend:
    """A backend for `engine` serving `model_path` as `served_name`; `port` is the managed engine's own port
    (None: the configured one of that engine kind)."""
    log_path = settings.logs_dir / f"engine-{served_name}.log"
    if engine == "vllm":
        engine_settings = (
            settings.engine if port is None else settings.engine.model_copy(update={"port": port, "url": None})
        )
        return VllmBackend(engine_settings, model_path=model_path, served_name=served_name, log_path=log_path)
    if engine == "triton":
        triton = settings.triton
        if port is not None:
            triton = triton.model_copy(
                update={"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "url": None}
            )
        repository = settings.home.resolve() / "triton-repositories" / served_name.replace(":", "_")
        return TritonBackend(triton, model_path, served_name, log_path, repository)
    raise ValueError(f"unknown engine {engine!r}")


def supervision_settings(settings: Settings, engine: str) -> EngineSettings:
    """Health/start-up timing for the supervisor; Triton keeps its own start-up timeout."""
    if engine == "triton":
        return settings.engine.model_copy(update={"startup_timeout_s": settings.triton.startup_timeout_s})
    return settings.engine


def max_model_len(settings: Settings, engine: str) -> int:
    return settings.triton.max_model_len if engine == "triton" else settings.engine.max_model_len
