"""The CLI's way to a running server's admin API: one request, errors printed in one place."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

console = Console()
ADMIN_TIMEOUT = httpx.Timeout(10.0, read=900.0)
"""Long reads: a route change or rollout start waits for an on-demand engine's warm-up (on_demand.ready_timeout_s)."""
UrlOption = typer.Option("http://127.0.0.1:3000", "--url", help="The running servekit server.")


def call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON answer of `METHOD /admin{path}`; exits 1 with the server's message on an error."""
    try:
        response = httpx.request(method, f"{url.rstrip('/')}/admin{path}", json=body, timeout=ADMIN_TIMEOUT)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from exc
    if not response.is_success:
        console.print(f"[red]error {response.status_code}:[/red] {response.json()['error']['message']}")
        raise typer.Exit(1)
    return response.json()
