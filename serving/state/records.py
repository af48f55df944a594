"""Routes, rollout states and the audit log behind one small interface, kept in the SQLite file (one gateway) or
in Redis (`serving.state.redis_records`, every replica).

A rollout's state changes together with its audit entry, and only if the state is still the one the writer read
(compare-and-set): two writers (the lease holder's tick and an admin command on another replica) can never both
record a decision on the same state, and no state change goes unaudited. The controller's own decisions also
carry its lease token (`serving.state.lease`), so a replica that lost the lease cannot write after its successor;
so do the route weights it sets.

A deleted route is stored as `DELETED` (a tombstone) rather than removed: routes from the config are defaults on
every replica, so only a stored deletion can take one away from the others and keep it away after a restart."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Protocol

from serving.errors import ConflictError

Definition = str
"""A route or rollout state as its pydantic model's JSON (the stores never parse it)."""

DELETED: Definition = "deleted"
"""A route's stored definition once deleted: never valid JSON, so never mistaken for a route."""


class StateRecords(Protocol):
    async def routes(self) -> dict[str, Definition]:
        """Route name -> definition (or `DELETED`), as stored by runtime changes (config routes are not stored)."""
        ...

    async def routes_version(self) -> str:
        """Changes whenever a route is set or deleted (never back to an earlier value): what replicas poll."""
        ...

    async def set_route(self, name: str, definition: Definition, token: int | None = None) -> None:
        """`token`: the lease token when the rollout controller sets the weights (LeaseLostError, nothing written,
        when it is no longer the holder's); None for an admin's change."""
        ...

    async def delete_route(self, name: str) -> None:
        """Store `DELETED` for `name`; a later `set_route` replaces it."""
        ...

    async def rollouts(self) -> dict[str, Definition]:
        """Route -> rollout state."""
        ...

    async def save_rollout(
        self,
        route: str,
        state: Definition,
        expected: Definition | None,
        event: str,
        detail: dict[str, Any],
        token: int | None,
    ) -> None:
        """Store `state` and append `event` to the route's audit log, both or neither, if the stored state is still
        `expected` (None: none stored), else raise `stale()`. `token`: the lease token of a controller's own
        decision (LeaseLostError when it is no longer the holder's); None for an admin's command."""
        ...

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int | None) -> None:
        """Append to the route's audit log; fenced like save_rollout when `token` is given."""
        ...

    async def history(self, route: str) -> list[dict[str, Any]]:
        """The audit log in order: `{"at", "event", **detail}` per entry."""
        ...


def stale(route: str) -> ConflictError:
    return ConflictError(f"The rollout on `{route}` changed meanwhile (another command or replica); retry.")


class SqliteRecords:
    """Today's state file (`serving.state.sqlite.connect`). One process writes it: tokens are not checked."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._changes = 0

    def stored_routes(self) -> dict[str, Definition]:
        """What a starting gateway routes by (read before any event loop runs), tombstones included."""
        return dict(self._db.execute("SELECT name, definition FROM routes").fetchall())

    async def routes(self) -> dict[str, Definition]:
        return self.stored_routes()

    async def routes_version(self) -> str:
        return str(self._changes)

    async def set_route(self, name: str, definition: Definition, token: int | None = None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO routes (name, definition, updated_at) VALUES (?, ?, ?)",
            (name, definition, time.time()),
        )
        self._changes += 1

    async def delete_route(self, name: str) -> None:
        await self.set_route(name, DELETED)

    async def rollouts(self) -> dict[str, Definition]:
        return dict(self._db.execute("SELECT route, state FROM rollouts").fetchall())

    async def save_rollout(
        self,
        route: str,
        state: Definition,
        expected: Definition | None,
        event: str,
        detail: dict[str, Any],
        token: int | None,
    ) -> None:
        """No await between the check and the writes: atomic within the one process that owns the file."""
        row = self._db.execute("SELECT state FROM rollouts WHERE route = ?", (route,)).fetchone()
        if (row[0] if row else None) != expected:
            raise stale(route)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO rollouts (route, state, updated_at) VALUES (?, ?, ?)",
                (route, state, time.time()),
            )
            self._insert_audit(route, event, detail)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def audit(self, route: str, event: str, detail: dict[str, Any], token: int | None) -> None:
        self._insert_audit(route, event, detail)

    def _insert_audit(self, route: str, event: str, detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, route, event, detail) VALUES (?, ?, ?, ?)",
            (time.time(), route, event, json.dumps(detail, default=str)),
        )

    async def history(self, route: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT at, event, detail FROM audit WHERE route = ? ORDER BY id", (route,))
        return [{"at": at, "event": event, **json.loads(detail)} for at, event, detail in rows]
