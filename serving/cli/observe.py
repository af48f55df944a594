"""`servekit observe`: a real Prometheus scraping servekit with its rules, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.console import Console

from serving.cli.config import ConfigOption
from serving.observe.server import PrometheusNotFoundError, PrometheusServer, PrometheusStartError
from serving.settings import load_settings

console = Console()
EXAMPLE_QUERIES = (
    "servekit:requests:rate1m",
    "servekit:error_ratio:rate1m",
    "servekit:ttft_seconds:p95_1m",
    "servekit:output_tokens:rate1m",
)


def observe(
    config: Path | None = ConfigOption,
    url: str | None = typer.Option(None, "--url", help="servekit server to scrape (default: server.host:port)."),
    port: int | None = typer.Option(None, help="Prometheus port (default: observe.port)."),
) -> None:
    """Run Prometheus scraping servekit's /metrics with servekit's recording and alert rules."""
    settings = load_settings(config)
    if settings.observe.url is not None:
        console.print(f"observe.url is set: query the external Prometheus at {settings.observe.url}; nothing started")
        return
    target = url or f"http://{settings.server.host}:{settings.server.port}"
    try:
        prometheus = PrometheusServer.for_target(settings, target, port)
        ready_s = prometheus.start()
    except (PrometheusNotFoundError, PrometheusStartError) as error:
        console.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    signal.signal(signal.SIGTERM, lambda *_: prometheus.stop())
    console.print(
        f"[green]Prometheus ready[/green] at {prometheus.url} in {ready_s:.1f}s, scraping {target}/metrics "
        f"every {settings.observe.scrape_interval} (data {prometheus.data_dir}). Ctrl-C stops it.",
        soft_wrap=True,
    )
    for query in EXAMPLE_QUERIES:
        console.print(
            f"  curl -s '{prometheus.url}/api/v1/query' --data-urlencode 'query={query}'",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    assert prometheus.process is not None
    try:
        raise typer.Exit(prometheus.process.wait())
    except KeyboardInterrupt:
        prometheus.stop()
