"""Routes, rollout states and the audit log behind one small interface, kept in the SQLite file (one gateway) or
in Redis (`serving.state.redis_records`, every replica). Rollout writes carry the controller's lease token
(`serving.state.lease`), so a replica that lost the lease cannot write a decision after its successor did."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Protocol

Definition = str
"""A route or rollout state as its pydantic model's JSON (the stores never parse it)."""


class StateRecords(Protocol):
    async def routes(self) -> dict[str, Definition]:
        """Route name -> definition, as stored by runtime changes (config routes are not stored)."""
        ...

    async def routes_version(self) -> str:
        """Changes whenever a route is set or deleted (never back to an earlier value): what replicas poll."""
        ...

    async def set_route(self, name: str, definition: Definition) -> None: ...

    async def delete_route(self, name: str) -> None: ...

    async def rollouts(self) -> dict[str, Definition]:
        """Route -> rollout state."""
        ...

    async def save_rollout(self, route: str, state: Definition, token: int) -> None:
        """Raise LeaseLostError when `token` is not the current lease holder's."""
        ...

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int) -> None:
        """Append to the route's audit log; fenced like save_rollout."""
        ...

    async def history(self, route: str) -> list[dict[str, Any]]:
        """The audit log in order: `{"at", "event", **detail}` per entry."""
        ...


class SqliteRecords:
    """Today's state file (`serving.state.sqlite.connect`). One process writes it: tokens are not checked."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._changes = 0

    async def routes(self) -> dict[str, Definition]:
        return dict(self._db.execute("SELECT name, definition FROM routes").fetchall())

    async def routes_version(self) -> str:
        return str(self._changes)

    async def set_route(self, name: str, definition: Definition) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO routes (name, definition, updated_at) VALUES (?, ?, ?)",
            (name, definition, time.time()),
        )
        self._changes += 1

    async def delete_route(self, name: str) -> None:
        self._db.execute("DELETE FROM routes WHERE name = ?", (name,))
        self._changes += 1

    async def rollouts(self) -> dict[str, Definition]:
        return dict(self._db.execute("SELECT route, state FROM rollouts").fetchall())

    async def save_rollout(self, route: str, state: Definition, token: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rollouts (route, state, updated_at) VALUES (?, ?, ?)", (route, state, time.time())
        )

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int) -> None:
        self._db.execute(
            "INSERT INTO audit (at, route, event, detail) VALUES (?, ?, ?, ?)",
            (time.time(), route, event, json.dumps(detail, default=str)),
        )

    async def history(self, route: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT at, event, detail FROM audit WHERE route = ? ORDER BY id", (route,))
        return [{"at": at, "event": event, **json.loads(detail)} for at, event, detail in rows]
