"""`servekit loadtest run|compare` (also `python -m loadtest`). Exit codes: 0 ok, 1 SLO breach or
regression, 2 bad input (unreachable URL, bad SLO, unknown shape, ...), found before any load starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from loadtest.prompts import MaxTokens
from loadtest.report import ROWS, cell
from loadtest.slo import SLOError

if TYPE_CHECKING:  # Locust (which gevent-patches its importer) loads only in the process that runs load
    from loadtest.distributed import Distribution

console = Console(stderr=True)
app = typer.Typer(no_args_is_help=True, help="Locust load tests with LLM metrics, load shapes and SLO gates.")
DEFAULT_MASTER_PORT = 5557  # Locust's own
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `2m`, `1h` -> seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"bad duration {text!r}: expected e.g. 60s, 2m")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2] or "s"]


def print_summary(results: dict) -> None:
    columns = {"overall": results["overall"], **results["by_version"]}
    table = Table("metric", *columns, title="load test summary")
    for label, *spec in ROWS:
        table.add_row(label, *(cell(summary, *spec) for summary in columns.values()))
    console.print(table)


def plan_distribution(workers: int, master: bool, bind_host: str, port: int) -> Distribution | None:
    """`--workers N`: N local workers on a free port; `--master --workers N`: N remote ones on `port`."""
    from loadtest.distributed import Distribution

    if workers < 0 or (master and workers < 1):
        raise ValueError("--workers must be >= 1 with --master (the number of workers to wait for)")
    if master:
        return Distribution(workers, local=False, bind_host=bind_host, port=port)
    return Distribution(workers) if workers else None


@app.command()
def run(
    url: str | None = typer.Option(None, help="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:3000"),
    model: str | None = typer.Option(
        None, help="Served model name (route) or registry version; default: the server's only model (routes aside)."
    ),
    users: int = typer.Option(8, help="Concurrent users (the top level for step/sweep, the pool for poisson)."),
    duration: str = typer.Option("60s", help="Run length: 20s, 2m."),
    shape: str = typer.Option("constant", help="constant | step | sweep | poisson"),
    rate: float | None = typer.Option(None, help="poisson: arrivals per second."),
    max_requests: int | None = typer.Option(None, help="Stop after this many requests."),
    max_tokens: str = typer.Option("64", help="Output tokens per request: 64, or 32:128 sampled uniformly."),
    endpoint: str = typer.Option("chat-stream", help="chat-stream | chat | completions"),
    version: str | None = typer.Option(None, help="Pin this version (x-servekit-version request header)."),
    slo: str = typer.Option("", help='e.g. "ttft_p95<0.5s,itl_p95<50ms,error_rate<0.01,tokens_per_s>100"'),
    ignore_eos: bool = typer.Option(True, help="Generate exactly max_tokens (vLLM ignore_eos)."),
    allow_remote: bool = typer.Option(False, help="Allow a non-loopback URL."),
    out: Path = typer.Option(Path("loadtest-out"), help="Directory for results.json, requests.csv, report.html."),
    workers: int = typer.Option(0, help="Locust distributed mode: a master and N local worker processes."),
    master: bool = typer.Option(False, "--master", help="Be the master only: wait for --workers N remote workers."),
    worker: bool = typer.Option(False, "--worker", help="Be a worker of the master at --master-host."),
    master_host: str = typer.Option("127.0.0.1", help="--worker: the master's host."),
    master_port: int = typer.Option(DEFAULT_MASTER_PORT, help="--master/--worker: the master's port."),
    master_bind_host: str = typer.Option("*", help="--master: the interface workers connect to."),
) -> None:
    """Run one bounded load test; exit 1 when an SLO is breached."""
    from loadtest.distributed import DistributionError, run_worker
    from loadtest.runner import LoadTestError, RunConfig
    from loadtest.runner import run as run_load_test

    if worker:
        run_worker(master_host, master_port)
        return
    try:
        if url is None:
            raise LoadTestError("--url is required (except with --worker)")
        distribution = plan_distribution(workers, master, master_bind_host, master_port)
        config = RunConfig(
            url=url, model=model, out=out, users=users, duration_s=parse_duration(duration), shape=shape, rate=rate,
            max_requests=max_requests, max_tokens=MaxTokens.parse(max_tokens), endpoint=endpoint, version=version,
            slo=slo, ignore_eos=ignore_eos, allow_remote=allow_remote,
        )  # fmt: skip
        results = run_load_test(config, console, distribution)
    except (LoadTestError, DistributionError, SLOError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print_summary(results)
    console.print(f"wrote {out}/results.json, requests.csv, report.html")
    if not results["slo"]["passed"]:
        console.print("[red]SLO breached:[/red]")
        for line in results["slo"]["breaches"]:
            console.print(f"  {line}")
        raise typer.Exit(1)
    if results["slo"]["objectives"]:
        console.print("[green]SLO passed[/green]")


@app.command(name="compare")
def compare_runs(
    baseline: Path = typer.Argument(..., help="Run directory (or results.json) A."),
    candidate: Path = typer.Argument(..., help="Run directory (or results.json) B."),
    tolerance: float = typer.Option(0.1, help="Relative change in the bad direction that counts as a regression."),
    out: Path | None = typer.Option(None, help="Where to write compare.html (default: B's directory)."),
) -> None:
    """Compare two runs; exit 1 when a regression beyond the tolerance is flagged."""
    from loadtest.compare import compare, fmt, load, write_html

    try:
        deltas = compare(load(baseline), load(candidate), tolerance)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]error:[/red] cannot read a run: {exc}")
        raise typer.Exit(2) from None
    table = Table("metric", str(baseline), str(candidate), "change (+ = better)", "", title="comparison")
    for d in deltas:
        change = "–" if d.change is None else f"{-d.change:+.1%}"
        flag = "[red]REGRESSION[/red]" if d.regression else ""
        table.add_row(d.metric, fmt(d.baseline), fmt(d.candidate), change, flag)
    console.print(table)
    target = out or (candidate if candidate.is_dir() else candidate.parent) / "compare.html"
    write_html(deltas, (str(baseline), str(candidate)), tolerance, target)
    console.print(f"wrote {target}")
    if any(d.regression for d in deltas):
        raise typer.Exit(1)
