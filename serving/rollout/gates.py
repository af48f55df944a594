"""Gates: checks outside the metrics that must pass before a rollout starts or a step proceeds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import httpx
from pydantic import BaseModel, Field

from serving.rollout.policy import RolloutState

Stage = Literal["pre-rollout", "step"]


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, as the audit log records it."""

    gate: str
    passed: bool
    detail: str
    report: str | None = None


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
