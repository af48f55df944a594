"""Gates: checks outside the metrics that must pass before a rollout starts or a step proceeds."""

from __future__ import annotations

import asyncio
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field

from serving.errors import InvalidRequestError
from serving.rollout.policy import RolloutState

Stage = Literal["pre-rollout", "step"]


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, as the audit log records it."""

    gate: str
    passed: bool
    detail: str
    report: str | None = None
    evidence: dict[str, Any] | None = None
    """What the verdict rested on (a shadow gate's run and comparison), kept in the audit log."""


class Gate(Protocol):
    async def check(self, state: RolloutState, stage: str) -> GateResult:
        """`stage` is `pre-rollout` or `step`."""
        ...


class WebhookGate:
    """POSTs the rollout state as JSON; any 2xx passes (as Flagger's webhooks)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def check(self, state: RolloutState, stage: str) -> GateResult:
        payload = {"stage": stage, **state.model_dump(mode="json")}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            return GateResult("webhook", False, f"webhook {self.url} unreachable: {exc!r}")
        return GateResult("webhook", response.is_success, f"webhook {self.url} answered {response.status_code}")


class LoadTestGateSpec(BaseModel):
    """A short load test of the canary alone, before it gets traffic and at each step."""

    url: str = Field(description="The servekit server to load (normally this one).")
    slo: str = Field(description='Locust SLO expression, e.g. "ttft_p95<2s,error_rate<0.01".')
    duration_s: float = Field(10, gt=0, le=600)
    users: int = Field(4, ge=1, le=256)
    stages: list[Stage] = Field(default_factory=lambda: ["pre-rollout", "step"])


class LoadTestRun(Protocol):
    """What a load-test run reports: the verdict, the breached SLO lines, its report.html."""

    passed: bool
    breaches: list[str]
    report_path: Path


LoadTestRunner = Callable[[str, str, str, str, float, int, Path], LoadTestRun]
"""(url, model, pinned version, SLO, duration s, users, out dir) -> run: `loadtest.gate.run_gate`, passed in by
the service that hosts the rollouts, so rollout logic never depends on the load-test package."""


class LoadTestGate:
    """Runs a load test through the given runner (`run_gate` starts a child process: Locust must not
    gevent-patch the server)."""

    def __init__(self, spec: LoadTestGateSpec, reports_dir: Path, run: LoadTestRunner) -> None:
        self.spec = spec
        self.reports_dir = reports_dir
        self.run = run

    async def check(self, state: RolloutState, stage: str) -> GateResult:
        if stage not in self.spec.stages:
            return GateResult("load test", True, f"load-test gate not configured for {stage}")
        out = self.reports_dir / f"{state.route}-{stage}-tick{state.ticks}"
        spec = self.spec
        # The canary is called by its own name, not through the route: the gate's synthetic requests must not
        # count as the route's traffic that the ratio checks compare with the primary's.
        run = await asyncio.to_thread(
            self.run, spec.url, state.canary, state.canary, spec.slo, spec.duration_s, spec.users, out
        )
        verdict = "; ".join(run.breaches) if run.breaches else f"SLOs held ({spec.slo})"
        report = str(run.report_path)
        return GateResult("load test", run.passed, f"load test: {verdict} (report {report})", report)


SHADOW_METRICS = (
    "agreement", "exact_match_rate", "error_rate", "primary_error_rate", "output_length_ratio",
    "ttft_p50_ratio", "ttft_p95_ratio", "latency_p50_ratio", "latency_p95_ratio", "pairs", "compared",
)  # fmt: skip
"""What a shadow requirement may name: the keys of a shadow run's comparison."""
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
REQUIREMENT = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_requirements(text: str) -> list[Requirement]:
    """`"agreement>=0.9,ttft_p95_ratio<=1.25"` -> requirements; a bad one is refused naming `require_shadow`."""
    requirements = []
    for part in text.split(","):
        match = REQUIREMENT.match(part)
        if match is None or match[1] not in SHADOW_METRICS:
            raise InvalidRequestError(
                f"Bad shadow requirement `{part.strip()}`: use METRIC>=|<=|>|<VALUE with METRIC one of "
                f"{', '.join(SHADOW_METRICS)}.",
                param="require_shadow",
            )
        try:
            requirements.append(Requirement(match[1], match[2], float(match[3])))
        except ValueError as exc:
            raise InvalidRequestError(f"Bad number in `{part.strip()}`.", param="require_shadow") from exc
    return requirements


class ShadowGate:
    """Refuses a canary whose last shadow run on the route missed the requirements (a run of another version,
    no run, or a metric without data misses them too). The run's results are passed in by whoever hosts the
    rollouts (rollouts never reach the shadow runs themselves); the verdict carries them into the audit log."""

    def __init__(self, requirements: str, last_run: dict[str, Any] | None) -> None:
        self.requirements = parse_requirements(requirements)
        self.last_run = last_run

    def breaches(self, canary: str) -> list[str]:
        if self.last_run is None:
            return ["no shadow run on this route"]
        if self.last_run["candidate"] != canary:
            return [f"the last shadow run was of `{self.last_run['candidate']}`, not of `{canary}`"]
        comparison = self.last_run["comparison"]
        lines = []
        for requirement in self.requirements:
            value = comparison.get(requirement.metric)
            if value is None:
                lines.append(f"{requirement.metric}: no data (required {requirement})")
            elif not COMPARISONS[requirement.op](value, requirement.value):
                lines.append(f"{requirement.metric} = {value:.4g} (required {requirement})")
        return lines

    async def check(self, state: RolloutState, stage: str) -> GateResult:
        breaches = self.breaches(state.canary)
        required = ",".join(map(str, self.requirements))
        verdict = "; ".join(breaches) if breaches else f"held ({required})"
        evidence = {"required": required, "run": self.last_run}
        report = self.last_run.get("report") if self.last_run else None
        return GateResult("shadow", not breaches, f"shadow: {verdict}", report, evidence)
