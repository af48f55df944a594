"""The capacity sweep: one bounded `python -m loadtest run` per load level (the same runner, users and SLO check
as any load test, in a process of its own since Locust gevent-patches its process), closed loop 1, 2, 4, ...
users until the SLO breaks clearly, then open-loop arrival rates around the closed-loop knee."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loadtest.capacity import Point, closed_levels, knee, open_loop_plan, sweep_is_over

RUN_OVERHEAD_S = 120.0  # start-up, stop timeout and report writing of one point, on top of its duration


class SweepError(Exception):
    """A point's run refused its input or crashed (not an SLO breach: that is a measurement)."""


@dataclass
class SweepConfig:
    url: str
    model: str  # the served name that pins the version
    slo: str
    out: Path  # one directory per point below it
    max_tokens: str = "64"
    duration_s: float = 20.0
    max_concurrency: int = 64
    endpoint: str = "chat-stream"
    open_loop: bool = True
    workers: int = 0  # Locust workers per point (0: one process)
    allow_remote: bool = False


def measure(config: SweepConfig, mode: Literal["closed", "open"], users: int, rate: float | None = None) -> Point:
    """Run one point and read its results.json; exit 1 (SLO breached) is a result like any other."""
    name = f"closed-{users}" if rate is None else f"open-{rate:g}"
    out = config.out / "points" / name
    command = [
        sys.executable, "-m", "loadtest", "run", "--url", config.url, "--model", config.model,
        "--users", str(users), "--duration", f"{config.duration_s:g}s", "--max-tokens", config.max_tokens,
        "--endpoint", config.endpoint, "--slo", config.slo, "--out", str(out),
        *(("--allow-remote",) if config.allow_remote else ()),
        *(("--shape", "poisson", "--rate", f"{rate:g}") if rate is not None else ()),
        *(("--workers", str(config.workers)) if config.workers else ()),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=config.duration_s + RUN_OVERHEAD_S)
    if finished.returncode not in (0, 1) or not (out / "results.json").is_file():
        raise SweepError(f"the {name} run failed (exit {finished.returncode}): {finished.stderr[-800:]}")
    return Point.from_results(json.loads((out / "results.json").read_text()), mode, users, rate)


def sweep(config: SweepConfig, on_point: Callable[[Point], None]) -> list[Point]:
    """Closed-loop levels until the SLO broke clearly (or the highest level), then, if a closed-loop level met
    the SLO, the open-loop rates around it, rising until one fails (a higher rate only overloads further).
    `on_point` sees each point as it is measured."""
    points: list[Point] = []
    for users in closed_levels(config.max_concurrency):
        points.append(measure(config, "closed", users))
        on_point(points[-1])
        if sweep_is_over(points):
            break
    closed_knee = knee(points)
    if config.open_loop and closed_knee is not None:
        for rate, pool in open_loop_plan(closed_knee):
            points.append(measure(config, "open", pool, rate))
            on_point(points[-1])
            if not points[-1].meets:
                break
    return points
