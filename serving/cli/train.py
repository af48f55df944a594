"""`servekit train`: the composition root between the registry and the `training` package.

It resolves the base model in the registry to a local directory, lets `training` fine-tune it (training
never sees BentoML), then registers the adapter (and with `--merge` a merged full model) as new versions
whose labels name the base. Under `torchrun --no-python servekit train ...` every rank trains and only
rank 0 registers."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from serving.cli.config import ConfigOption
from serving.registry.adapters import merge_adapter
from serving.registry.store import ModelMissingError, RegisteredModel, get_model, get_model_by_tag, import_directory
from serving.settings import load_settings

console = Console()
CHECKPOINTS_DIR = "checkpoints"


def _register(name: str, version: str, source: Path, kind: str, base_tag: str, manifest: dict[str, Any]) -> str:
    """Idempotent: the version id is a hash of the recipe, so an existing one is the same artifact."""
    try:
        return f"already registered {get_model(name, version).tag}"
    except ModelMissingError:
        labels = {"kind": kind, "base": base_tag}
        registered = import_directory(name, version, source, labels, {**manifest, "kind": kind})
        return f"registered {registered.tag}"


def _register_adapter(output_dir: Path, manifest: dict[str, Any], base: RegisteredModel) -> str:
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "adapter"
        shutil.copytree(output_dir, staged, ignore=shutil.ignore_patterns(CHECKPOINTS_DIR))
        return _register(manifest["name"], manifest["version"], staged, "adapter", base.tag, manifest)


def _register_merged(output_dir: Path, manifest: dict[str, Any], base: RegisteredModel) -> str:
    """Base + adapter merged into a full model (for engines or setups without LoRA)."""
    with tempfile.TemporaryDirectory() as staging:
        merge_adapter(base.path, output_dir, Path(staging))
        name = f"{manifest['name']}-merged"
        return _register(name, manifest["version"], Path(staging), "merged", base.tag, {**manifest, "name": name})


def train(
    config_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training YAML config."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set lora.r=16 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir."),
    merge: bool = typer.Option(False, "--merge", help="Also register base+adapter merged as a full model."),
    config: Path | None = ConfigOption,
) -> None:
    """Fine-tune a LoRA adapter on a registered base model and register the result."""
    from training.config import load_config
    from training.data import DatasetError
    from training.pipeline import run, summary

    load_settings(config)
    try:
        train_config = load_config(config_file, overrides)
        base = get_model_by_tag(train_config.base_model)
        manifest = run(train_config, base.path, base.tag, resume=resume)
    except (ModelMissingError, DatasetError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if manifest is None:  # a non-zero torchrun rank: rank 0 registers
        return
    console.print(summary(manifest))
    console.print(_register_adapter(train_config.out, manifest, base))
    if merge:
        console.print(_register_merged(train_config.out, manifest, base))
