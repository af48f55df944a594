"""Service-level objectives: `ttft_p95<0.5s,itl_p95<50ms,error_rate<0.01,tokens_per_s>100`.

Grammar (one clause per comma): `METRIC OP NUMBER [UNIT]` with OP in `< <= > >=`, UNIT `s` or `ms` (time
metrics only; bare numbers are seconds). METRIC is one of `SLO_METRICS`: a percentile of a per-request
latency (`ttft_`, `itl_`, `latency_` + `p50|p90|p95|p99|mean`) or a run-level figure. The same objectives also
decide goodput: the share of requests that succeeded and meet every per-request latency clause."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LATENCY_METRICS = ("ttft", "itl", "latency")
STATISTICS = ("p50", "p90", "p95", "p99", "mean")
RUN_METRICS = ("error_rate", "tokens_per_s", "request_rate", "goodput")
SLO_METRICS = tuple(f"{m}_{s}" for m in LATENCY_METRICS for s in STATISTICS) + RUN_METRICS
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}  # fmt: skip
CLAUSE = re.compile(
    r"^(?P<metric>[A-Za-z0-9_]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?P<unit>[A-Za-z]*)$"
)


class SLOError(ValueError):
    """A malformed SLO expression; the message names the offending token."""


@dataclass(frozen=True)
class Objective:
    metric: str
    op: str
    value: float  # seconds for time metrics
    text: str  # the clause as written, for messages

    @property
    def latency_metric(self) -> str | None:
        """`ttft`/`itl`/`latency` for per-request latency clauses (they decide goodput), else None."""
        base = self.metric.rsplit("_", 1)[0]
        return base if base in LATENCY_METRICS else None

    def holds(self, observed: float) -> bool:
        return OPERATORS[self.op](observed, self.value)


def parse_slo(expression: str) -> list[Objective]:
    """Parse the comma-separated clauses; raise SLOError naming the first bad token."""
    objectives = []
    for raw in expression.split(","):
        clause = raw.strip()
        if not clause:
            raise SLOError(f"empty clause in SLO {expression!r}")
        match = CLAUSE.match(clause)
        if match is None:
            raise SLOError(f"bad SLO clause {clause!r}: expected METRIC<VALUE[s|ms] such as ttft_p95<0.5s")
        metric, op, value, unit = match["metric"], match["op"], float(match["value"]), match["unit"]
        if metric not in SLO_METRICS:
            raise SLOError(f"unknown SLO metric {metric!r} in {clause!r}; known: {', '.join(SLO_METRICS)}")
        is_time = metric.split("_")[0] in LATENCY_METRICS
        if unit and (not is_time or unit not in ("s", "ms")):
            allowed = "s or ms" if is_time else "no unit"
            raise SLOError(f"bad unit {unit!r} in {clause!r}: {metric} takes {allowed}")
        objectives.append(Objective(metric, op, value / 1000 if unit == "ms" else value, clause))
    return objectives


def breaches(objectives: list[Objective], observed: Mapping[str, float | None]) -> list[str]:
    """One line per objective that does not hold; a metric with no data (no successful request) breaches."""
    lines = []
    for objective in objectives:
        value = observed.get(objective.metric)
        if value is None or value != value or not objective.holds(value):
            shown = "no data" if value is None or value != value else f"{value:.4g}"
            lines.append(f"{objective.text}: observed {objective.metric}={shown}")
    return lines


def meets_request_objectives(objectives: list[Objective], values: Mapping[str, float | None]) -> bool:
    """Whether one request's ttft/itl/latency meet every per-request clause (goodput's definition)."""
    for objective in objectives:
        metric = objective.latency_metric
        if metric is None:
            continue
        value = values.get(metric)
        if value is not None and not objective.holds(value):
            return False
    return True
