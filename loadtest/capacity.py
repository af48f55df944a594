"""Capacity: which load a version sustains within an SLO. Pure logic (measured points in, knee out); the sweep
that measures the points runs one `python -m loadtest run` per point (`servekit capacity`).

A point is one bounded run: closed loop (N users, each sending as soon as its answer arrived) or open loop
(Poisson arrivals at a rate). Its goodput rate is the requests per second that succeeded and met every
per-request latency clause; a point *meets the SLO* when every clause, run-level ones included (ttft_p95,
error_rate, ...), holds. The knee is the goodput-optimal point: the most goodput per second among the points
that meet the SLO (DistServe's and vLLM's `--goodput` notion, applied to a sweep)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PROFILE_SCHEMA_VERSION = 1
OPEN_LOOP_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)  # arrival rates tried, as multiples of the closed-loop knee's rate


@dataclass(frozen=True)
class Point:
    """One measured load level (the JSON of one `curve` entry in profile.json)."""

    mode: Literal["closed", "open"]
    concurrency: int  # closed: the users; open: the pool the arrivals are drawn from
    offered_rate: float | None  # open loop: arrivals per second asked for
    requests: int
    request_rate: float  # successful requests per second
    goodput_rate: float  # successful requests per second that met every per-request clause
    error_rate: float
    ttft_p95: float | None
    itl_p95: float | None
    latency_p95: float | None
    breaches: tuple[str, ...] = field(default_factory=tuple)  # "clause: observed ..." per clause that failed

    @property
    def meets(self) -> bool:
        return not self.breaches

    @property
    def failed_clauses(self) -> list[str]:
        return [line.split(":", 1)[0] for line in self.breaches]

    @classmethod
    def from_results(
        cls, results: dict[str, Any], mode: Literal["closed", "open"], concurrency: int, offered_rate: float | None
    ) -> Point:
        """A point from one run's results.json (the run was given the SLO, so its verdict is the point's)."""
        overall = results["overall"]
        wall = max(results["duration_s"], 1e-9)
        return cls(
            mode=mode, concurrency=concurrency, offered_rate=offered_rate, requests=overall["requests"],
            request_rate=overall["request_rate"], goodput_rate=overall["goodput"] * overall["requests"] / wall,
            error_rate=overall["error_rate"], ttft_p95=overall["ttft"]["p95"], itl_p95=overall["itl"]["p95"],
            latency_p95=overall["latency"]["p95"], breaches=tuple(results["slo"]["breaches"]),
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Point:
        return cls(**{**data, "breaches": tuple(data.get("breaches", ()))})

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "breaches": list(self.breaches), "meets_slo": self.meets}

    def describe(self) -> str:
        load = f"{self.offered_rate:g} req/s offered" if self.offered_rate is not None else f"{self.concurrency} users"
        p95 = " ".join(f"{name}={value * 1000:.0f}ms" for name, value in
                       (("ttft_p95", self.ttft_p95), ("itl_p95", self.itl_p95)) if value is not None)  # fmt: skip
        verdict = "meets SLO" if self.meets else f"fails {', '.join(self.failed_clauses)}"
        return (f"{self.mode:6} {load:>22}: {self.goodput_rate:7.2f} good req/s of {self.request_rate:7.2f}  "
                f"{p95}  errors {self.error_rate:.1%}  {verdict}")  # fmt: skip


def knee(points: list[Point]) -> Point | None:
    """The point with the most goodput per second among those meeting the SLO; ties go to the lighter load."""
    meeting = [p for p in points if p.meets]
    if not meeting:
        return None
    return max(meeting, key=lambda p: (p.goodput_rate, -p.concurrency, -(p.offered_rate or 0.0)))


def best_failing(points: list[Point]) -> Point:
    """When no point meets the SLO: the one closest to it (fewest failed clauses, then most goodput)."""
    if not points:
        raise ValueError("no points were measured")
    return min(points, key=lambda p: (len(p.breaches), -p.goodput_rate))


def closed_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... below `max_concurrency`, then `max_concurrency` itself."""
    if max_concurrency < 1:
        raise ValueError("the highest concurrency must be >= 1")
    levels = [2**i for i in range(max(0, math.ceil(math.log2(max_concurrency))))]
    return [*levels, max_concurrency]


def sweep_is_over(points: list[Point]) -> bool:
    """The closed-loop sweep stops once the SLO broke clearly: two levels in a row fail it, or a level fails it
    without more goodput than the best level so far (more users only queue from there on)."""
    if not points or points[-1].meets:
        return False
    if len(points) >= 2 and not points[-2].meets:
        return True
    best = knee(points[:-1])
    return best is not None and points[-1].goodput_rate <= best.goodput_rate


def open_loop_plan(closed_knee: Point, factors: tuple[float, ...] = OPEN_LOOP_FACTORS) -> list[tuple[float, int]]:
    """(arrival rate, user pool) pairs around the closed-loop knee's rate. The pool is twice the users that
    Little's law needs at the knee's latency, so arrivals are not held back by busy users."""
    latency = closed_knee.latency_p95 or 1.0
    plan = []
    for factor in factors:
        rate = float(f"{closed_knee.request_rate * factor:.3g}")
        if rate > 0:
            plan.append((rate, max(2 * closed_knee.concurrency, math.ceil(2 * rate * latency))))
    return plan


def build_profile(
    version: str, slo: list[str], points: list[Point], run: dict[str, Any], engine: dict[str, Any],
    machine: dict[str, Any], created_at: str,
) -> dict[str, Any]:  # fmt: skip
    """profile.json: what was measured, where, against which SLO, and the knee (None when no point met it)."""
    closed = knee([p for p in points if p.mode == "closed"])
    opened = knee([p for p in points if p.mode == "open"])
    knee_json = None
    if closed is not None:
        knee_json = {
            "concurrency": closed.concurrency, "request_rate": closed.request_rate,
            "goodput_rate": closed.goodput_rate, "ttft_p95": closed.ttft_p95, "itl_p95": closed.itl_p95,
            "max_arrival_rate": opened.offered_rate if opened else None,
        }  # fmt: skip
    return {
        "schema_version": PROFILE_SCHEMA_VERSION, "version": version, "created_at": created_at, "slo": slo,
        "run": run, "engine": engine, "machine": machine, "knee": knee_json,
        "curve": [p.to_json() for p in points],
    }  # fmt: skip
