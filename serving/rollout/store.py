"""Rollout state and the audit log in the state file, so a rollout resumes after a restart."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from serving.rollout.policy import RolloutState


class RolloutStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def save(self, state: RolloutState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rollouts (route, state, updated_at) VALUES (?, ?, ?)",
            (state.route, state.model_dump_json(), time.time()),
        )

    def get(self, route: str) -> RolloutState | None:
        row = self._db.execute("SELECT state FROM rollouts WHERE route = ?", (route,)).fetchone()
        return RolloutState.model_validate_json(row[0]) if row else None

    def all(self) -> list[RolloutState]:
        return [RolloutState.model_validate_json(row[0]) for row in self._db.execute("SELECT state FROM rollouts")]

    def audit(self, route: str, event: str, detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, route, event, detail) VALUES (?, ?, ?, ?)",
            (time.time(), route, event, json.dumps(detail, default=str)),
        )

    def history(self, route: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT at, event, detail FROM audit WHERE route = ? ORDER BY id", (route,))
        return [{"at": at, "event": event, **json.loads(detail)} for at, event, detail in rows]
