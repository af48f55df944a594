"""`servekit keys`: API keys, stored hashed. With `state.url` set they live in Redis, shared by every gateway
(create, revoke and list act there at once); without it `create` prints the `auth.keys` entry for the YAML."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
import yaml
from redis.exceptions import RedisError
from rich.table import Table

from serving.api.auth import key_digest
from serving.cli.admin_client import API_KEY_ENV, console
from serving.cli.config import ConfigOption
from serving.errors import ServekitError
from serving.settings import Settings, load_settings
from serving.state.redis_keys import SharedKeyStore, StoredKey, new_key
from serving.state.shared import SharedState

app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed: in Redis with state.url, else the config).")
T = TypeVar("T")


def _shared(settings: Settings, action: Callable[[SharedKeyStore], Awaitable[T]]) -> T:
    """Run one action on the shared table; a Redis or servekit error ends the command with its message."""

    async def run() -> T:
        state = SharedState.open(settings.state)
        try:
            return await action(state.key_store())
        finally:
            await state.close()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as error:
        console.print(f"[red]error:[/red] cannot reach {settings.state.url}: {error}")
    except ServekitError as error:
        console.print(f"[red]error:[/red] {error.message}")
    raise typer.Exit(1)


@app.command()
def create(
    key_id: str = typer.Option(..., "--id", help="Name shown in logs instead of the key."),
    role: str = typer.Option("user", help="user or admin"),
    models: list[str] = typer.Option([], "--model", help="Limit the key to these routes/versions (repeatable)."),
    requests_per_minute: int | None = typer.Option(None, min=0, help="Overrides limits.requests_per_minute."),
    tokens_per_minute: int | None = typer.Option(None, min=0, help="Overrides limits.tokens_per_minute."),
    priority: int = typer.Option(1, help="Under overload, a route's `shed_priority` step sheds keys below a level."),
    config: Path | None = ConfigOption,
) -> None:
    """Print a fresh key (shown once); store its SHA-256 in Redis, or print the `auth.keys` entry to add."""
    if role not in ("user", "admin"):
        raise typer.BadParameter("role must be user or admin")
    settings = load_settings(config)
    key = new_key()
    stored = StoredKey(key_id, key_digest(key), role, tuple(models), requests_per_minute, tokens_per_minute, priority)
    if settings.state.url is not None:
        _shared(settings, lambda store: store.create(stored))
        console.print(f"key (shown once): [bold]{key}[/bold]")
        console.print(f"stored hashed in {settings.state.url}; every gateway on it accepts it now.")
        _admin_hint(role, key)
        return
    entry = {"id": key_id, "sha256": stored.sha256, "role": role, "models": models}
    limits = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
    entry |= {name: value for name, value in limits.items() if value is not None}
    if priority != 1:
        entry["priority"] = priority
    console.print(f"key (shown once): [bold]{key}[/bold]")
    _admin_hint(role, key)
    console.print("add under `auth: keys:` in servekit.yaml:")
    console.print(yaml.safe_dump([entry], sort_keys=False), highlight=False)


def _admin_hint(role: str, key: str) -> None:
    if role == "admin":
        console.print(f"for the admin CLI (routes, rollout, models load, ...): export {API_KEY_ENV}={key}")


@app.command()
def revoke(key_id: str = typer.Option(..., "--id"), config: Path | None = ConfigOption) -> None:
    """Delete a shared key; every gateway refuses it within `state.keys_poll_s`."""
    settings = load_settings(config)
    if settings.state.url is None:
        console.print("[red]error:[/red] no state.url: keys live in servekit.yaml; delete the entry there.")
        raise typer.Exit(1)
    _shared(settings, lambda store: store.revoke(key_id))
    console.print(f"revoked `{key_id}`")


@app.command(name="list")
def list_(config: Path | None = ConfigOption) -> None:
    """Keys from the config and, with state.url, from Redis (ids and rights; never a key)."""
    settings = load_settings(config)
    keys = [(key.id, key.role, tuple(key.models), key.requests_per_minute, key.tokens_per_minute, "config")
            for key in settings.auth.keys]  # fmt: skip
    if settings.state.url is not None:
        shared = _shared(settings, SharedKeyStore.all)
        keys += [(key.id, key.role, key.models, key.requests_per_minute, key.tokens_per_minute, "redis")
                 for key in sorted(shared.values(), key=lambda key: key.id)]  # fmt: skip
    table = Table("id", "role", "models", "requests/min", "tokens/min", "stored in")
    for key_id, role, models, per_minute, tokens_per_minute, where in keys:
        table.add_row(key_id, role, ", ".join(models) or "all", _limit(per_minute), _limit(tokens_per_minute), where)
    console.print(table)


def _limit(value: int | None) -> str:
    return "default" if value is None else str(value)
