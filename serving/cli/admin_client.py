"""The CLI's way to a running server's admin API: one request, errors printed in one place, and progress
while a request waits on an engine start."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
import typer
from rich.console import Console

console = Console(soft_wrap=True)
"""Lines are never broken by the CLI itself: tags, messages and JSON stay whole for copying and scripts."""
ADMIN_TIMEOUT = httpx.Timeout(10.0, read=900.0)
"""Long reads: a route change or rollout start waits for an on-demand engine's warm-up (on_demand.ready_timeout_s)."""
UrlOption = typer.Option("http://127.0.0.1:3000", "--url", help="The running servekit server.")
POLL_S = 1.0
REPEAT_S = 10.0
"""How often an engine still starting is reported again when its state has not changed."""


def call(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    progress: bool = False,
    missing_ok: bool = False,
) -> Any:
    """The JSON answer of `METHOD /admin{path}`; exits 1 with the server's message on an error (with
    `missing_ok`, a 404 answers None instead). With `progress`, engines that start or warm up meanwhile are
    reported (state and time in it) while it waits."""
    base = url.rstrip("/")
    try:
        if progress:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(httpx.request, method, f"{base}/admin{path}", json=body, timeout=ADMIN_TIMEOUT)
                _report_engines_until_done(base, pending)
                response = pending.result()
        else:
            response = httpx.request(method, f"{base}/admin{path}", json=body, timeout=ADMIN_TIMEOUT)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from exc
    if missing_ok and response.status_code == 404:
        return None
    if not response.is_success:
        console.print(f"[red]error {response.status_code}:[/red] {response.json()['error']['message']}")
        raise typer.Exit(1)
    return response.json()


def _report_engines_until_done(base: str, pending: Future[httpx.Response]) -> None:
    """Print a line for each engine that is not ready, when its state changes and every REPEAT_S after."""
    started = time.monotonic()
    said: dict[str, tuple[str, float]] = {}
    with httpx.Client(base_url=base, timeout=5) as client:
        while not pending.done():
            try:
                engines = client.get("/admin/engines").json()
            except (httpx.HTTPError, ValueError):
                engines = []
            for engine in engines if isinstance(engines, list) else []:
                name, state = engine["name"], engine["state"]
                last = said.get(name)
                if state in ("ready", "stopped") and last is None:
                    continue
                if last is None or last[0] != state or time.monotonic() - last[1] >= REPEAT_S:
                    error = f" (last error: {engine['last_error']})" if engine.get("last_error") else ""
                    waited = time.monotonic() - started
                    console.print(
                        f"  engine {name}: {state} for {engine['state_for_s']:.0f} s{error}; waiting {waited:.0f} s"
                    )
                    said[name] = (state, time.monotonic())
            wait([pending], timeout=POLL_S)
