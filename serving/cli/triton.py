"""`servekit triton setup`: install the Triton venv (`servekit bench triton` measures it)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from serving.backends.triton import install as triton_install
from serving.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="The Triton Inference Server engine.")
console = Console(width=160)
ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (default: servekit.yaml).")


@app.command()
def setup(config: Path | None = ConfigOption) -> None:
    """Create `triton.venv` with nvidia-pytriton (tritonserver + Python backend) and torch; a no-op when done."""
    venv = load_settings(config).triton.venv.resolve()
    installed = triton_install.setup(venv)
    console.print(f"Triton venv {'installed' if installed else 'already installed'}: {venv}")
