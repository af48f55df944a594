"""The route table: resolves a request's model name to the version that serves it, persists changes.

Routes live in `serving.state.records.StateRecords`: the SQLite file (one gateway) or Redis (every replica). A change
is written there first and applied here only once stored, so a change the other replicas cannot see (Redis down)
is refused instead of applied on one replica. Changes made through other replicas arrive through `changes` and
`applied` (the gateway's `apply_routes`, driven by its route watcher).

Routes from the config are defaults that stored definitions override. A deletion is stored too, as a tombstone
(`DELETED`): every replica drops the route, a config route included, and a restart from the same config does not
bring it back; setting the route again replaces the tombstone. Tombstones never reach `routes`."""

from __future__ import annotations

import sqlite3

from serving.router.assign import choose_version
from serving.router.routes import Route
from serving.state.records import DELETED, Definition, SqliteRecords, StateRecords


class Router:
    def __init__(self, records: StateRecords, defaults: dict[str, Route], stored: dict[str, Definition]) -> None:
        """Routes from config are the defaults; what was changed at runtime (`stored`) wins over them."""
        self.records = records
        self.routes = dict(defaults)
        self.stored = dict(stored)
        """The stored table as last applied (tombstones included): what the next shared table is compared with."""
        for name, definition in stored.items():
            if definition == DELETED:
                self.routes.pop(name, None)
            else:
                self.routes[name] = Route.model_validate_json(definition)

    def resolve(self, model: str, sticky_key: str | None, pinned: str | None) -> str:
        """The version to serve `model` with: a pinned version wins, then the route's sticky choice;
        a name that is not a route is a version itself."""
        if pinned:
            return pinned
        route = self.routes.get(model)
        return choose_version(route, sticky_key) if route else model

    def adopt(self, route: Route) -> None:
        """Replace a route in memory only (its members resolved to registry tags at startup): a route from the
        config keeps following the config."""
        self.routes[route.name] = route

    async def set(self, route: Route, token: int | None = None) -> None:
        """`token`: the rollout controller's lease token (a stale one is refused with LeaseLostError and changes
        nothing); None for an admin's change."""
        definition = route.model_dump_json()
        await self.records.set_route(route.name, definition, token)
        self.stored[route.name] = definition
        self.routes[route.name] = route

    async def delete(self, name: str) -> None:
        await self.records.delete_route(name)
        self.stored[name] = DELETED
        self.routes.pop(name, None)

    def changes(self, table: dict[str, Definition]) -> tuple[dict[str, Route], list[str]]:
        """What a stored table changes here: routes to adopt, and routes deleted since the last one applied (newly
        tombstoned, config routes included, or gone from the table: a Redis that came back empty)."""
        fresh = {name: d for name, d in table.items() if self.stored.get(name) != d}
        changed = {name: Route.model_validate_json(d) for name, d in fresh.items() if d != DELETED}
        deleted = [name for name, d in fresh.items() if d == DELETED]
        return changed, deleted + [name for name in self.stored if name not in table]

    def applied(self, table: dict[str, Definition], adopted: list[Route], deleted: list[str]) -> None:
        """Switch to `table`, except for changed routes missing from `adopted` (not servable here yet): those keep
        their old definition and count as not applied, so the next table tries them again."""
        for route in adopted:
            self.routes[route.name] = route
        for name in deleted:
            self.routes.pop(name, None)
        changed = {name for name, d in table.items() if self.stored.get(name) != d and d != DELETED}
        kept = changed - {r.name for r in adopted}
        self.stored = {name: d for name, d in table.items() if name not in kept}

    def referencing(self, version: str) -> list[str]:
        """Routes that send traffic to `version`."""
        return [r.name for r in self.routes.values() if r.weight_of(version) > 0]


def embedded_router(connection: sqlite3.Connection, defaults: dict[str, Route]) -> Router:
    """One gateway's router on its SQLite state file."""
    records = SqliteRecords(connection)
    return Router(records, defaults, records.stored_routes())
