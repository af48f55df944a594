"""`servekit bench`: start servekit, then measure it side by side with its peers (loadtest.bench, HTTP only)."""

from __future__ import annotations

from pathlib import Path

import typer

from loadtest.bench import run_gateway_bench
from serving.cli.config import ConfigOption
from serving.cli.serve import SOURCE_SERVICE, console, start_service, wait_until_ready
from serving.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="Benchmarks with ratios measured in one run.")


@app.command()
def gateway(
    config: Path | None = ConfigOption,
    concurrency: int = typer.Option(32),
    max_tokens: int = typer.Option(128),
    rounds: int = typer.Option(4, help="Alternating rounds per target."),
    out: Path = typer.Option(Path("bench-out")),
) -> None:
    """servekit vs the raw vLLM server it manages (same process, same engine args)."""
    settings = load_settings(config)
    engine = settings.engine
    raw_url = str(engine.url).rstrip("/") if engine.url else f"http://{engine.host}:{engine.port}"
    process, base_url = start_service(settings, config, SOURCE_SERVICE, settings.server.port)
    try:
        if not wait_until_ready(process, base_url):
            console.print("[red]servekit exited before it was ready[/red]")
            raise typer.Exit(1)
        run_gateway_bench(base_url, raw_url, settings.model.name, concurrency, max_tokens, rounds, out)
    finally:
        process.terminate()
        process.wait()
