"""One place that knows which class runs which engine kind."""

from __future__ import annotations

from pathlib import Path

from serving.backends.base import Backend
from serving.backends.vllm import VllmBackend
from serving.settings import Settings


def create_backend(settings: Settings, engine: str, model_path: Path, served_name: str, port: int) -> Backend:
    """A backend for `engine` serving `model_path` as `served_name`; `port` is its managed engine's port."""
    log_path = settings.logs_dir / f"engine-{served_name}.log"
    if engine == "vllm":
        engine_settings = settings.engine if port == settings.engine.port else settings.engine.model_copy(
            update={"port": port, "url": None}
        )  # fmt: skip
        return VllmBackend(engine_settings, model_path=model_path, served_name=served_name, log_path=log_path)
    raise ValueError(f"unknown engine {engine!r}")
