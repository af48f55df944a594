"""`servekit keys create`: a new API key and the hashed entry to put in the config."""

from __future__ import annotations

import secrets

import typer
import yaml

from serving.api.auth import key_digest
from serving.cli.admin_client import console

app = typer.Typer(no_args_is_help=True, help="API keys (stored hashed in the config).")


@app.command()
def create(
    key_id: str = typer.Option(..., "--id", help="Name shown in logs instead of the key."),
    role: str = typer.Option("user", help="user or admin"),
    models: list[str] = typer.Option([], "--model", help="Limit the key to these routes/versions (repeatable)."),
) -> None:
    """Print a fresh key (shown once) and the `auth.keys` entry that holds only its SHA-256."""
    if role not in ("user", "admin"):
        raise typer.BadParameter("role must be user or admin")
    key = "sk-" + secrets.token_urlsafe(32)
    entry = {"id": key_id, "sha256": key_digest(key), "role": role, "models": models}
    console.print(f"key (shown once): [bold]{key}[/bold]")
    console.print("add under `auth: keys:` in servekit.yaml:")
    console.print(yaml.safe_dump([entry], sort_keys=False), highlight=False)
