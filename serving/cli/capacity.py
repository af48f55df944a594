"""`servekit capacity VERSION --slo ...`: measure what a served version sustains within an SLO, write
profile.json and a plot, and store the profile with the version in the registry.

Exit codes: 0 a knee was found; 1 no measured load met the SLO (the closest point and its failed clauses are
printed); 2 bad input (unknown version, unreachable server, malformed SLO)."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import typer

from serving.cli.admin_client import UrlOption, console
from serving.cli.config import ConfigOption
from serving.settings import load_settings

PROFILE_JSON = "profile.json"
PLOT_PNG = "capacity.png"
PAGE_HTML = "capacity.html"


class UnknownVersionError(LookupError):
    pass


def served_card(url: str, version: str) -> dict[str, Any]:
    """The `/v1/models` card that serves `version` (by registry tag or served name); raises naming what is served."""
    try:
        response = httpx.get(f"{url}/v1/models", timeout=10.0)
        response.raise_for_status()
        cards = response.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise UnknownVersionError(f"cannot list {url}/v1/models ({type(exc).__name__}: {exc}); is it up?") from None
    for card in cards:
        if card.get("engine") != "route" and version in (card["id"], card.get("root")):
            return card
    served = ", ".join(sorted(c.get("root", c["id"]) for c in cards if c.get("engine") != "route")) or "nothing"
    raise UnknownVersionError(f"{version!r} is not served by {url}; it serves: {served}")


def machine() -> dict[str, Any]:
    """Where the profile was measured: a knee holds for this hardware only."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "hostname": platform.node(), "system": platform.system()}


def store(tag: str, profile: dict[str, Any]) -> None:
    """Keep the profile with the version when the registry has it (a remote server's version may be absent)."""
    from serving.registry.capacity import store_capacity_profile
    from serving.registry.store import ModelMissingError, get_model_by_tag

    try:
        model = get_model_by_tag(tag)
    except ModelMissingError:
        console.print(f"{tag} is not in this machine's registry: profile not stored (profile.json is written)")
        return
    console.print(f"stored with {model.tag} in the registry: {store_capacity_profile(model, profile)}")


def capacity(
    version: str = typer.Argument(..., help="A served version: registry tag (name:version) or served name."),
    slo: str = typer.Option(..., help='Every clause must hold, e.g. "ttft_p95<1s,itl_p95<100ms,error_rate<0.01".'),
    max_tokens: str = typer.Option("32:128", help="Output tokens per request: 64, or 32:128 sampled uniformly."),
    duration: str = typer.Option("30s", help="How long each load level runs."),
    max_concurrency: int = typer.Option(64, help="The highest closed-loop user count tried."),
    open_loop: bool = typer.Option(True, help="Also try Poisson arrival rates around the closed-loop knee."),
    workers: int = typer.Option(0, help="Locust worker processes per level (0: one process)."),
    endpoint: str = typer.Option("chat-stream", help="chat-stream | chat | completions"),
    allow_remote: bool = typer.Option(False, help="Allow a non-loopback URL."),
    save: bool = typer.Option(True, "--store/--no-store", help="Store the profile with the version in the registry."),
    out: Path = typer.Option(Path("capacity-out"), help="Directory for profile.json, capacity.png/.html, the runs."),
    url: str = UrlOption,
    config: Path | None = ConfigOption,
) -> None:
    """Sweep concurrency (and arrival rate) against VERSION; find the goodput-optimal knee within the SLO."""
    from loadtest.capacity import best_failing, build_profile
    from loadtest.capacity_report import write_page, write_plot
    from loadtest.cli import parse_duration
    from loadtest.prompts import MaxTokens
    from loadtest.slo import SLOError, parse_slo
    from loadtest.sweep import SweepConfig, SweepError, sweep

    load_settings(config)
    url = url.rstrip("/")
    try:
        objectives = parse_slo(slo)
        tokens = str(MaxTokens.parse(max_tokens))
        card = served_card(url, version)
    except (SLOError, ValueError, UnknownVersionError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    tag = card.get("root", card["id"])
    sweep_config = SweepConfig(
        url=url, model=card["id"], slo=slo, out=out, max_tokens=tokens, duration_s=parse_duration(duration),
        max_concurrency=max_concurrency, endpoint=endpoint, open_loop=open_loop, workers=workers,
        allow_remote=allow_remote,
    )  # fmt: skip
    console.print(f"profiling {tag} at {url}: {duration} per level, SLO {slo}")
    try:
        points = sweep(sweep_config, lambda point: console.print(point.describe(), highlight=False))
    except SweepError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    run = {"max_tokens": tokens, "duration_s": sweep_config.duration_s, "endpoint": endpoint, "url": url,
           "workers": workers}  # fmt: skip
    engine = {key: card.get(key) for key in ("engine", "root", "parent", "max_model_len")}
    profile = build_profile(tag, [o.text for o in objectives], points, run, engine, machine(),
                            datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / PROFILE_JSON).write_text(json.dumps(profile, indent=2))
    write_plot(profile, out / PLOT_PNG)
    write_page(profile, out / PLOT_PNG, out / PAGE_HTML)
    console.print(f"wrote {out / PROFILE_JSON}, {out / PLOT_PNG}, {out / PAGE_HTML}")
    if save:
        store(tag, profile)
    if (knee := profile["knee"]) is None:
        closest = best_failing(points)
        console.print(f"[red]no load level met the SLO.[/red] closest: {closest.describe()}", highlight=False)
        for line in closest.breaches:
            console.print(f"  failed {line}", highlight=False)
        raise typer.Exit(1)
    console.print(
        f"[green]knee:[/green] {knee['concurrency']} users, {knee['request_rate']:.2f} req/s, "
        f"{knee['goodput_rate']:.2f} good req/s; highest open-loop rate within the SLO: {knee['max_arrival_rate']}"
    )
