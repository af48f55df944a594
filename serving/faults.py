"""Deliberate misbehaviour of a version (error rate, added latency) to demonstrate and test rollbacks.

Off unless `faults.enabled`; set through the admin API only."""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, Field

from serving.errors import EngineError


class FaultProfile(BaseModel):
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of requests answered with a 500-class error.")
    added_latency_ms: float = Field(0.0, ge=0.0, le=60_000)

    async def apply(self, version: str) -> None:
        """Called before a request reaches the engine."""
        if self.added_latency_ms:
            await asyncio.sleep(self.added_latency_ms / 1000)
        if random.random() < self.error_rate:
            raise EngineError(f"injected fault on `{version}` (fault profile set through /admin/faults)")


class Faults:
    """The fault profile set on each served version (by served name)."""

    def __init__(self) -> None:
        self._by_version: dict[str, FaultProfile] = {}

    def set(self, version: str, profile: FaultProfile | None) -> None:
        if profile is None:
            self._by_version.pop(version, None)
        else:
            self._by_version[version] = profile

    async def apply(self, version: str) -> None:
        if (profile := self._by_version.get(version)) is not None:
            await profile.apply(version)
