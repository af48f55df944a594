"""`servekit shadow ...`: copy part of a route's traffic to a candidate and compare its answers with the primary's."""

from __future__ import annotations

import json
from typing import Any

import typer

from serving.cli.admin_client import UrlOption, call, console
from serving.cli.rollout import seconds

app = typer.Typer(
    no_args_is_help=True,
    help="Shadow traffic: a candidate answers copies of real requests; only the primary's reach clients.",
)


def _summary(run: dict[str, Any]) -> str:
    comparison = run["comparison"]
    numbers = ", ".join(
        f"{key} {value:.3g}"
        for key, value in comparison.items()
        if value is not None and key not in ("pairs", "compared")
    )
    return (
        f"shadow of [bold]{run['candidate']}[/bold] on {run['route']} (primary {run['primary']}): {run['state']}, "
        f"{run['percent']:g}% of keys, {run['mirrored']} copies sent, {comparison['pairs']} compared"
        + (f"; {numbers}" if numbers else "")
    )


@app.command()
def start(
    route: str,
    candidate: str = typer.Option(..., help="The version that answers the copies."),
    percent: float = typer.Option(..., help="Share of the route's sticky keys (conversations) copied, in (0, 100]."),
    max_in_flight: int | None = typer.Option(None, help="Copies in flight at most; beyond, copies are dropped."),
    duration: str | None = typer.Option(None, help="Stop by itself after this long, e.g. 10m (default: until stop)."),
    url: str = UrlOption,
) -> None:
    """Start shadowing ROUTE; a candidate adapter not served yet is loaded first."""
    body = {
        "candidate": candidate, "percent": percent, "max_in_flight": max_in_flight,
        "duration_s": seconds(duration) if duration else None,
    }  # fmt: skip
    console.print(_summary(call(url, "POST", f"/shadows/{route}", body, progress=True)))


@app.command()
def status(route: str | None = typer.Argument(None), url: str = UrlOption) -> None:
    """ROUTE's run in progress or its last one (JSON); without ROUTE, one line per run in progress."""
    if route is not None:
        console.print_json(json.dumps(call(url, "GET", f"/shadows/{route}")))
        return
    runs = call(url, "GET", "/shadows")
    for run in runs:
        console.print(_summary(run))
    if not runs:
        console.print("no shadow run in progress")


@app.command()
def stop(route: str, url: str = UrlOption) -> None:
    """Stop shadowing ROUTE and write its report (results.json and report.html on the server)."""
    run = call(url, "DELETE", f"/shadows/{route}")
    console.print(_summary(run))
    console.print(f"report: {run['report']}")
