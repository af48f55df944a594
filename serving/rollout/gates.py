"""Gates: checks outside the metrics that must pass before a rollout starts or a step proceeds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import httpx
from pydantic import BaseModel, Field

from loadtest.gate import run_gate
from serving.rollout.policy import RolloutState

Stage = Literal["pre-rollout", "step"]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    detail: str


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
            return GateResult(False, f"webhook {self.url} unreachable: {exc!r}")
        return GateResult(response.is_success, f"webhook {self.url} answered {response.status_code}")


class LoadTestGateSpec(BaseModel):
    """A short load test pinned to the canary (through the route, `x-servekit-version`) before it gets traffic."""

    url: str = Field(description="The servekit server to load (normally this one).")
    slo: str = Field(description='Locust SLO expression, e.g. "ttft_p95<2s,error_rate<0.01".')
    duration_s: float = Field(10, gt=0, le=600)
    users: int = Field(4, ge=1, le=256)
    stages: list[Stage] = Field(default_factory=lambda: ["pre-rollout", "step"])


class LoadTestGate:
    """Runs `loadtest.gate.run_gate` (a child process: Locust must not gevent-patch the server)."""

    def __init__(self, spec: LoadTestGateSpec, reports_dir: Path) -> None:
        self.spec = spec
        self.reports_dir = reports_dir

    async def check(self, state: RolloutState, stage: str) -> GateResult:
        if stage not in self.spec.stages:
            return GateResult(True, f"load-test gate not configured for {stage}")
        out = self.reports_dir / f"{state.route}-{stage}-tick{state.ticks}"
        spec = self.spec
        result = await asyncio.to_thread(
            run_gate, spec.url, state.route, state.canary, spec.slo, spec.duration_s, spec.users, out
        )
        verdict = "; ".join(result.breaches) if result.breaches else "SLOs held"
        return GateResult(result.passed, f"load test: {verdict} (report {result.report_path})")
