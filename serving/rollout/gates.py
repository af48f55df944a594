"""Gates: checks outside the metrics that must pass before a rollout starts or a step proceeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from serving.rollout.policy import RolloutState


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
