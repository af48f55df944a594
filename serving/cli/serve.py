"""`servekit serve`: `bentoml serve` with servekit's settings, announcing the URL once the model is ready."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

from serving.backends.process import spawn, wait_for_url
from serving.cli.config import ConfigOption
from serving.settings import CONFIG_ENV_VAR, Settings, load_settings

console = Console()
READY_POLL_S = 1.0
SOURCE_SERVICE = "bentos.service:Servekit"


def curl_example(settings: Settings, base_url: str) -> str:
    return (
        f"curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"model": "{settings.model.name}", '
        '"messages": [{"role": "user", "content": "Write a haiku about GPUs."}], "max_tokens": 64}\''
    )


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str) -> bool:
    with console.status("starting the engine and warming it up (first start on CPU takes ~30-120 s)..."):
        return wait_for_url(process, f"{base_url}/ready", math.inf, READY_POLL_S)


def start_service(
    settings: Settings, config: Path | None, target: str, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """`bentoml serve TARGET` as a child; returns it and its base URL."""
    command = [
        sys.executable, "-m", "bentoml", "serve", target,
        "--host", settings.server.host, "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, CONFIG_ENV_VAR: str(config.resolve())} if config else None
    return spawn(command, None, env), f"http://{settings.server.host}:{port}"


def serve(
    config: Path | None = ConfigOption,
    bento: str | None = typer.Option(None, help="Serve a built bento (e.g. servekit:latest) instead of the source."),
    port: int | None = typer.Option(None, help="HTTP port (default: server.port from config)."),
) -> None:
    """Serve the configured model with the OpenAI API through `bentoml serve`."""
    settings = load_settings(config)
    target = bento or SOURCE_SERVICE
    process, base_url = start_service(settings, config, target, port or settings.server.port)
    console.print(f"serving [bold]{settings.model.name}[/bold] at {base_url} ({target})")
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        if wait_until_ready(process, base_url):
            console.print(
                f"\n[green]ready[/green]: OpenAI API at {base_url}/v1  (metrics: {base_url}/metrics)",
                soft_wrap=True,
            )
            console.print(curl_example(settings, base_url), highlight=False, soft_wrap=True)
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        raise typer.Exit(process.wait()) from None
