"""A stand-in engine server for pool unit tests: `/health` and a vLLM-shaped `/metrics` page that a test can
change while it runs. Real engines are covered by the pool's end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

METRICS_TEMPLATE = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="smollm2"}} {waiting}
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="smollm2"}} 3.0
"""


@dataclass
class EnginePage:
    healthy: bool = True
    waiting: int = 0
    url: str = ""


@asynccontextmanager
async def engine_page() -> AsyncIterator[EnginePage]:
    page = EnginePage()

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if page.healthy else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS_TEMPLATE.format(waiting=float(page.waiting)))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    page.url = f"http://127.0.0.1:{port}"
    try:
        yield page
    finally:
        await runner.cleanup()
