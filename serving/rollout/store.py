"""Rollout states and the audit log in the state's records (`serving.state.records`: the SQLite file, or Redis
shared by every replica), so a rollout resumes after a restart or on another replica.

A state is saved together with its audit entry, and only over the state it was decided from (`previous`): a
decision or command made on a state that changed meanwhile is refused with 409, never recorded twice."""

from __future__ import annotations

from typing import Any

from serving.rollout.policy import RolloutState
from serving.state.records import StateRecords


class RolloutStore:
    def __init__(self, records: StateRecords) -> None:
        self.records = records

    async def save(
        self, state: RolloutState, previous: RolloutState | None, event: str, detail: dict[str, Any], token: int | None
    ) -> None:
        """`token`: the lease token of the controller's own decision; None for an admin's command."""
        expected = None if previous is None else previous.model_dump_json()
        await self.records.save_rollout(state.route, state.model_dump_json(), expected, event, detail, token)

    async def get(self, route: str) -> RolloutState | None:
        stored = (await self.records.rollouts()).get(route)
        return RolloutState.model_validate_json(stored) if stored else None

    async def all(self) -> list[RolloutState]:
        return [RolloutState.model_validate_json(state) for state in (await self.records.rollouts()).values()]

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int | None) -> None:
        await self.records.audit(route, event, detail, token)

    async def history(self, route: str) -> list[dict[str, Any]]:
        return await self.records.history(route)
