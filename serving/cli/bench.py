"""`servekit bench`: start servekit, then measure it side by side with its peers (loadtest.bench, HTTP only)."""

from __future__ import annotations

import json
import statistics
import time
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


@app.command()
def router(decisions: int = typer.Option(100_000), out: Path = typer.Option(Path("bench-out"))) -> None:
    """The A/B decision in-process: p50/p99 microseconds per request (target p99 <= 50 us)."""
    from serving.router.assign import choose_version
    from serving.router.routes import Route, RouteMember

    results = {}
    for members in (2, 4):
        route = Route(
            name="r", members=[RouteMember(version=f"v{i}:abc", weight=100 / members) for i in range(members)]
        )
        timings = []
        for i in range(decisions):
            key = f"user-{i}"
            started = time.perf_counter_ns()
            choose_version(route, key)
            timings.append((time.perf_counter_ns() - started) / 1000)
        cuts = statistics.quantiles(timings, n=100)
        results[f"{members}_versions"] = {"p50_us": cuts[49], "p99_us": cuts[98], "decisions": decisions}
        console.print(f"{members} versions: p50 {cuts[49]:.1f} us, p99 {cuts[98]:.1f} us over {decisions:,} decisions")
    out.mkdir(parents=True, exist_ok=True)
    (out / "router.json").write_text(json.dumps(results, indent=2))
