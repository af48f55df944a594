"""`servekit release report`: one HTML file telling a candidate's story from its training to its rollout's end."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from serving.cli.admin_client import UrlOption, call, console
from serving.release.report import write
from serving.release.story import gather

app = typer.Typer(no_args_is_help=True, help="Release reports: training, shadow, gates and rollout in one document.")


@app.command()
def report(
    route: str,
    out: Path = typer.Option(..., "--out", help="Directory for release.html."),
    rollout: int | None = typer.Option(
        None, "--rollout", help="Which of the route's rollouts (1 = first; default: the last)."
    ),
    url: str = UrlOption,
) -> None:
    """Write DIR/release.html for ROUTE's rollout, from the server's audit log and this machine's registry.
    Pieces that are missing (no training, no shadow run, ...) are said so in their section."""
    release = gather(route, partial(_get, url), rollout)
    path = write(release, out)
    missing = ", ".join(release.notes) or "none"
    console.print(f"release report of {release.candidate or 'no candidate'} on {route}: {path} (missing: {missing})")


def _get(url: str, path: str) -> object:
    return call(url, "GET", path, missing_ok=True)
