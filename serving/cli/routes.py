"""`servekit routes ...`: A/B routes of a running server."""

from __future__ import annotations

import typer
from rich.table import Table

from serving.cli.admin_client import UrlOption, call, console

app = typer.Typer(no_args_is_help=True, help="A/B routes: a public name split by weight over versions.")


@app.command("list")
def list_(url: str = UrlOption) -> None:
    table = Table("route", "version", "weight")
    for route in call(url, "GET", "/routes"):
        for member in route["members"]:
            table.add_row(route["name"], member["version"], f"{member['weight']:g}%")
    console.print(table)


@app.command("set")
def set_(
    name: str,
    members: list[str] = typer.Argument(..., help="VERSION=WEIGHT pairs summing to 100, e.g. base=90 new:abc=10"),
    url: str = UrlOption,
) -> None:
    """Create a route or change its weights; waits (showing progress) while a new base version's engine starts.
    Members are stored as the registry versions they name."""
    parsed = []
    for member in members:
        version, sep, weight = member.rpartition("=")
        if not sep:
            raise typer.BadParameter(f"{member!r} is not VERSION=WEIGHT")
        parsed.append({"version": version, "weight": float(weight)})
    route = call(url, "PUT", f"/routes/{name}", {"members": parsed}, progress=True)
    split = ", ".join(f"{m['version']}={m['weight']:g}" for m in route["members"])
    console.print(f"route [bold]{name}[/bold] set: {split}")


@app.command()
def delete(name: str, url: str = UrlOption) -> None:
    call(url, "DELETE", f"/routes/{name}")
    console.print(f"route [bold]{name}[/bold] deleted")
