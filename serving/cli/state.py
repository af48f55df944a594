"""`servekit state check`: can this machine reach the shared state the gateways use, and what is in it?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from redis.exceptions import RedisError

from serving.cli.admin_client import console
from serving.cli.config import ConfigOption
from serving.settings import StateSettings, load_settings
from serving.state.shared import SharedState

app = typer.Typer(no_args_is_help=True, help="The state gateways share (state.url).")


@dataclass(frozen=True)
class StateReport:
    ping_ms: float
    server_version: str
    api_keys: int
    keys_total: int


async def probe(settings: StateSettings) -> StateReport:
    state = SharedState.open(settings)
    try:
        started = time.perf_counter()
        await state.client.ping()
        ping_ms = (time.perf_counter() - started) * 1000
        server = await state.client.info("server")
        api_keys = len(await state.key_store().all())
        return StateReport(ping_ms, server["redis_version"], api_keys, await state.client.dbsize())
    finally:
        await state.close()


@app.command()
def check(config: Path | None = ConfigOption) -> None:
    """Ping the Redis at `state.url` and report its version and what servekit keeps there."""
    settings = load_settings(config)
    if settings.state.url is None:
        console.print(f"state: embedded (no state.url): rate limits in each gateway, routes in {settings.state_path}")
        return
    try:
        report = asyncio.run(probe(settings.state))
    except (RedisError, OSError) as error:
        console.print(f"[red]error:[/red] cannot reach {settings.state.url}: {error}")
        raise typer.Exit(1) from None
    console.print(f"state: {settings.state.url} (on_unavailable: {settings.state.on_unavailable})")
    console.print(f"ping: {report.ping_ms:.2f} ms, redis {report.server_version}")
    console.print(f"api keys: {report.api_keys}, keys in the database: {report.keys_total}")
