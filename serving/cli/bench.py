"""`servekit bench [SECTION ...]`: measure servekit against its peers, each comparison back to back in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from serving.bench.harness import SECTIONS, console, run
from serving.cli.config import ConfigOption
from serving.settings import load_settings


def bench(
    sections: list[str] = typer.Argument(None, help=f"Any of: all, {', '.join(SECTIONS)} (default: all)."),
    config: Path | None = ConfigOption,
    out: Path = typer.Option(Path("bench-out"), help="Directory for bench.json, bench.md and the plots."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run with tiny sizes: checks the harness, not speed."),
    url: str | None = typer.Option(None, help="Measure this running servekit instead of starting one."),
    engine_url: str | None = typer.Option(None, help="With --url: the raw engine behind it (its engine.port)."),
) -> None:
    """Write bench.json, bench.md and PNG plots; exit 1 when a section failed (missed goals are reported)."""
    chosen = list(SECTIONS) if not sections or "all" in sections else sections
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise typer.BadParameter(f"unknown section(s) {', '.join(unknown)}; choose from all, {', '.join(SECTIONS)}")
    if bool(url) != bool(engine_url):
        raise typer.BadParameter("--url and --engine-url go together")
    report = run(load_settings(config), config, chosen, out, quick, url, engine_url)
    console.print(f"wrote {out}/bench.json and {out}/bench.md")
    if any("error" in section for section in report["sections"].values()):
        raise typer.Exit(1)
