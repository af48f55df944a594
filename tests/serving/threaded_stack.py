"""The whole ASGI app in front of fake engines, served by uvicorn on a free port in a thread: what the CLI's
HTTP client needs in unit tests (the real server: tests/conftest.py's `server`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from serving.api.app import create_app, serve_gateway
from serving.backends.ports import free_port_block
from serving.rollout.controller import RolloutController
from serving.rollout.gateway_observer import GatewayObserver
from serving.rollout.store import RolloutStore
from serving.settings import Settings
from serving.state import connect
from serving.state.records import SqliteRecords
from tests.serving.fake_engine import started_gateway

T = TypeVar("T")


@contextmanager
def threaded_stack(
    tmp_path: Path, settings: Settings, *names: str, ready: Callable[[FastAPI], Awaitable[None]] | None = None
) -> Iterator[tuple[str, FastAPI]]:
    """(base URL, app) of a server whose fake engines and rollout controller live in uvicorn's own loop."""
    app = create_app(settings)

    async def startup() -> None:
        gateway = await started_gateway(tmp_path / "state.db", *names)
        serve_gateway(app, gateway)
        store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
        app.state.rollouts = RolloutController(gateway, GatewayObserver(gateway.metrics.recent), store, tmp_path)
        app.state.loop = asyncio.get_running_loop()
        if ready is not None:
            await ready(app)

    async def shutdown() -> None:
        if getattr(app.state, "shadows", None) is not None:
            await app.state.shadows.close()
        await app.state.rollouts.stop()
        await app.state.gateway.stop()

    app.router.on_startup.append(startup)
    app.router.on_shutdown.append(shutdown)
    port = free_port_block()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the threaded server did not start")
            time.sleep(0.01)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(10)


def in_loop(app: FastAPI, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` in the server's own loop (where its gateway, rollouts and shadows live) and wait for it."""
    return asyncio.run_coroutine_threadsafe(coroutine, app.state.loop).result(timeout=60)
