"""`servekit config ...`"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax

from serving.settings import config_path, load_settings

app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (default: servekit.yaml).")


@app.command()
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective configuration: defaults, then the YAML file, then SERVEKIT_* variables."""
    settings = load_settings(config)
    rendered = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
    console = Console()
    console.print(f"# from {config or config_path()} + SERVEKIT_* environment", style="dim")
    console.print(Syntax(rendered, "yaml", background_color="default"))
