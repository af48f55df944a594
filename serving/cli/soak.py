"""`servekit soak`: steady load for N minutes; the gateway's RSS and p95 over time, with a verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from loadtest.soak import P95_DRIFT_LIMIT, RSS_GROWTH_LIMIT, Sample, soak, write
from serving.bench.session import ServekitSession
from serving.cli.config import ConfigOption
from serving.settings import load_settings

console = Console()


def soak_command(
    minutes: float = typer.Option(1.0, help="How long; 30 for the documented soak."),
    url: str | None = typer.Option(None, help="A running servekit; without it one is started (and stopped)."),
    concurrency: int = typer.Option(16, help="Concurrent streams; 16 is about half of this 2-core box's capacity."),
    max_tokens: int = typer.Option(64),
    interval: float = typer.Option(0.0, help="Seconds per sample (default: minutes x 5, at least 3 s)."),
    out: Path = typer.Option(Path("soak-out")),
    config: Path | None = ConfigOption,
) -> None:
    """Exit 1 when RSS grew 5 % or more, or p95 drifted beyond 1.25x."""
    settings = load_settings(config)
    session = ServekitSession(settings, config, out / "logs", url, url)
    interval_s = interval or max(3.0, minutes * 5)

    def show(sample: Sample) -> None:
        console.print(
            f"t={sample.t_s:6.0f}s  RSS {sample.rss_mib:7.1f} MiB  requests {sample.requests:4d}  "
            f"errors {sample.errors}  p95 {sample.latency_p95_ms:7.0f} ms  TTFT p95 {sample.ttft_p95_ms:6.0f} ms"
        )

    try:
        target = session.url()
        report = asyncio.run(
            soak(target, settings.model.name, minutes * 60, concurrency, max_tokens, interval_s, on_sample=show)
        )
    finally:
        session.stop()
    write(report, out)
    console.print(
        f"RSS growth {100 * report.rss_growth:+.2f} % (limit {100 * RSS_GROWTH_LIMIT:.0f} %), "
        f"p95 drift {report.p95_drift:.2f}x (limit {P95_DRIFT_LIMIT}x): "
        + ("[green]PASS[/green]" if report.passed else "[red]FAIL[/red]")
        + f"; wrote {out}/soak.json and soak.png"
    )
    if not report.passed:
        raise typer.Exit(1)
