"""The CLI's way to a running server's admin API: one request, errors printed in one place, and progress
while a request waits on an engine start."""

from __future__ import annotations

import os
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
API_KEY_ENV = "SERVEKIT_API_KEY"
"""An admin key for the admin API, needed once auth is on (an `auth.keys` entry, or `state.url`)."""
POLL_S = 1.0
REPEAT_S = 10.0
"""How often an engine still starting is reported again when its state has not changed."""


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer $SERVEKIT_API_KEY` when that is set: a gateway with auth on refuses keyless calls."""
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


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
    request = {"json": body, "headers": auth_headers(), "timeout": ADMIN_TIMEOUT}
    try:
        if progress:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(httpx.request, method, f"{base}/admin{path}", **request)
                _report_engines_until_done(base, pending)
                response = pending.result()
        else:
            response = httpx.request(method, f"{base}/admin{path}", **request)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from exc
    if missing_ok and response.status_code == 404:
        return None
    if not response.is_success:
        message = response.json()["error"]["message"] + _hint(response)
        console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response.json()


def _hint(response: httpx.Response) -> str:
    """What to do about a refused key: the CLI sends the admin key only from the environment."""
    if response.status_code in (401, 403) and not os.environ.get(API_KEY_ENV):
        return f" (export {API_KEY_ENV}=<an admin key>; `servekit keys create --id NAME --role admin` makes one)"
    return ""


def _report_engines_until_done(base: str, pending: Future[httpx.Response]) -> None:
    """Print a line for each engine that is not ready, when its state changes and every REPEAT_S after."""
    started = time.monotonic()
    said: dict[str, tuple[str, float]] = {}
    with httpx.Client(base_url=base, headers=auth_headers(), timeout=5) as client:
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
