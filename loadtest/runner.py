"""Run one bounded load test in-process with Locust as a library, then write its outputs.

Importing this module imports Locust, which gevent-patches the process: host it in a process of its own
(`python -m loadtest`, `servekit loadtest run`, or `loadtest.gate.run_gate`, which spawns one)."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import httpx
from locust.env import Environment
from locust.runners import STATE_STOPPED, Runner
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from loadtest.distributed import Distribution, Master, run_options
from loadtest.metrics import RequestRecord
from loadtest.prompts import MaxTokens
from loadtest.results import write_outputs
from loadtest.shapes import make_shape
from loadtest.slo import parse_slo
from loadtest.stream_client import API_KEY_ENV, auth_headers
from loadtest.users import ENDPOINTS, LLMUser, RequestBudget, UserSettings

STOP_TIMEOUT_S = 30.0  # in-flight requests may finish after the shape ends; a run never outlives this


class LoadTestError(Exception):
    """Bad input found before any load starts (unreachable URL, unknown model, non-loopback target, ...)."""


@dataclass
class RunConfig:
    url: str
    model: str | None  # None: the served model, when the server has exactly one
    out: Path
    users: int = 8
    duration_s: float = 60.0
    shape: str = "constant"
    rate: float | None = None  # poisson: arrivals per second
    max_requests: int | None = None
    max_tokens: MaxTokens = field(default_factory=lambda: MaxTokens(64, 64))
    endpoint: str = "chat-stream"
    version: str | None = None
    slo: str = ""
    ignore_eos: bool = True
    allow_remote: bool = False

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out), "max_tokens": str(self.max_tokens)}


@dataclass
class Collector:
    """Keeps the `RequestRecord` that every user's request event carries."""

    records: list[RequestRecord] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    def reset(self) -> None:
        """A new test starts (plain Locust can run several from one UI session)."""
        self.records.clear()
        self.started_at = time.time()

    def on_request(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        if context and isinstance(context.get("record"), RequestRecord):
            self.records.append(context["record"])


def check_loopback(url: str) -> None:
    """Load tests target this machine unless told otherwise: a typo must not load someone else's server."""
    host = urlsplit(url).hostname
    if not host:
        raise LoadTestError(f"bad URL {url!r}: expected http://HOST:PORT")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise LoadTestError(f"cannot resolve {host!r} in {url!r}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise LoadTestError(f"{url} is not a loopback address; pass --allow-remote to load-test it on purpose")


def served_models(cards: list[dict[str, Any]]) -> list[str]:
    """The models a server serves, for picking one when none was named: every card but servekit's routes
    (`engine: "route"`, public names split over versions that are listed themselves), as `vllm bench serve`
    takes the one model a vLLM server lists."""
    return sorted(card["id"] for card in cards if card.get("engine") != "route")


def probe(url: str, model: str | None) -> str:
    """GET /v1/models before any load: fail fast on an unreachable server or a model it does not serve.
    Returns the model to load: the one named, else the only served model (several: refused, listed)."""
    try:
        response = httpx.get(f"{url}/v1/models", headers=auth_headers(), timeout=5.0)
        if response.status_code in (401, 403):
            refused = f"{url} refused the API key ({response.status_code})"
            raise LoadTestError(f"{refused}: set {API_KEY_ENV} to a key it accepts")
        response.raise_for_status()
        cards = response.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise LoadTestError(f"cannot reach {url}/v1/models ({type(exc).__name__}: {exc}); is the server up?") from None
    if model is None:
        models = served_models(cards)
        if len(models) != 1:
            listed = ", ".join(models) or "none"
            raise LoadTestError(f"{url} serves {len(models)} models ({listed}); name one with --model")
        return models[0]
    served = sorted({card["id"] for card in cards} | {card.get("root", card["id"]) for card in cards})
    if model not in served:
        raise LoadTestError(f"{url} does not serve {model!r}; it serves: {', '.join(served)}")
    return model


def validate(config: RunConfig) -> None:
    """Everything that can be refused without the network, then the network checks; raises before any load."""
    if config.endpoint not in ENDPOINTS:
        raise LoadTestError(f"unknown endpoint {config.endpoint!r}; valid endpoints: {', '.join(ENDPOINTS)}")
    if config.users < 1 or config.duration_s <= 0:
        raise LoadTestError("--users must be >= 1 and --duration > 0")
    if config.slo:
        parse_slo(config.slo)  # raises SLOError naming the bad token
    make_shape(config.shape, config.users, config.duration_s, config.rate)  # raises listing the valid shapes
    if not config.allow_remote:
        check_loopback(config.url)
    config.model = probe(config.url, config.model)


def run(config: RunConfig, console: Console, distribution: Distribution | None = None) -> dict[str, Any]:
    """Validate, run the shape until it ends (or max requests), write outputs into `config.out`; the results.

    With a `distribution`, this process is a Locust master: the users run in worker processes (local or
    remote), and their records come back here, so the outputs are the same as a single-process run's."""
    config.url = config.url.rstrip("/")
    named = config.model is not None
    validate(config)
    if not named:
        console.print(f"--model not given: load-testing {config.model!r}, the one model {config.url} serves")
    objectives = parse_slo(config.slo) if config.slo else []
    LLMUser.settings = UserSettings(
        model=config.model, endpoint=config.endpoint, max_tokens=config.max_tokens, version=config.version,
        ignore_eos=config.ignore_eos, budget=RequestBudget(config.max_requests),
    )  # fmt: skip
    environment = Environment(
        user_classes=[LLMUser], shape_class=make_shape(config.shape, config.users, config.duration_s, config.rate),
        host=config.url, stop_timeout=STOP_TIMEOUT_S,
        parsed_options=run_options(worker_settings(config, distribution.workers)) if distribution else None,
    )  # fmt: skip
    collector = Collector()
    master = None
    if distribution is None:
        environment.events.request.add_listener(collector.on_request)
        runner = environment.create_local_runner()
    else:
        master = Master(environment, distribution, collector.records, config.out / "workers")

        def waiting(connected: int, port: int) -> None:
            console.print(f"waiting for workers on port {port}: {connected}/{distribution.workers} connected")

        runner = master.start(waiting)
        console.print(f"{distribution.workers} workers connected")
    collector.reset()
    t0 = collector.started_at
    runner.start_shape()
    try:
        follow(runner, collector, config, console)
    finally:  # also on Ctrl-C: local workers must not outlive the run
        if master is None:
            runner.quit()
        else:
            runner.stop()
            if missing := master.finish():
                console.print(f"[yellow]warning:[/yellow] {missing} workers did not hand over their last records")
    wall_s = time.time() - t0
    return write_outputs(config.out, collector.records, config.describe(), t0, wall_s, objectives)


def follow(runner: Runner, collector: Collector, config: RunConfig, console: Console) -> None:
    """Show progress until the shape ends, max requests are done, or the run overstays its deadline."""
    deadline = time.monotonic() + config.duration_s + STOP_TIMEOUT_S + 5
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, auto_refresh=False
    ) as progress:
        task = progress.add_task("starting", total=config.duration_s)
        while runner.state != STATE_STOPPED and time.monotonic() < deadline:
            if config.max_requests is not None and len(collector.records) >= config.max_requests:
                break
            gevent.sleep(0.2)
            done = collector.records
            errors = sum(not r.ok for r in done)
            tokens = sum(r.output_tokens for r in done)
            elapsed = time.time() - collector.started_at
            progress.update(
                task, completed=min(elapsed, config.duration_s),
                description=f"{runner.user_count:>3} users  {len(done):>5} requests  {errors} errors  "
                f"{tokens / max(elapsed, 1e-9):7.1f} tok/s",
            )  # fmt: skip
            progress.refresh()


def worker_settings(config: RunConfig, workers: int) -> dict[str, Any]:
    """What a worker needs to build the same users and pacing (plain data: Locust ships it to the workers)."""
    return {
        "model": config.model, "endpoint": config.endpoint, "max_tokens": str(config.max_tokens),
        "version": config.version, "ignore_eos": config.ignore_eos, "max_requests": config.max_requests,
        "workers": workers, "shape": config.shape, "users": config.users, "duration_s": config.duration_s,
        "rate": config.rate,
    }  # fmt: skip
