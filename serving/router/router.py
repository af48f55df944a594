"""The route table: resolves a request's model name to the version that serves it, persists changes.

Routes live in `serving.state.records.StateRecords`: the SQLite file (one gateway) or Redis (every replica). A change
is written there first and applied here only once stored, so a change the other replicas cannot see (Redis down)
is refused instead of applied on one replica. Changes made through other replicas arrive through `changes` and
`applied` (the gateway's `apply_routes`, driven by its route watcher)."""

from __future__ import annotations

import sqlite3

from serving.router.assign import choose_version
from serving.router.routes import Route
from serving.state.records import Definition, SqliteRecords, StateRecords


class Router:
    def __init__(self, records: StateRecords, defaults: dict[str, Route], stored: dict[str, Definition]) -> None:
        """Routes from config are the defaults; what was changed at runtime (`stored`) wins over them."""
        self.records = records
        self.routes = dict(defaults)
        self.stored = dict(stored)
        """The stored table as last applied: what the next shared table is compared with."""
        for name, definition in stored.items():
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

    async def set(self, route: Route) -> None:
        definition = route.model_dump_json()
        await self.records.set_route(route.name, definition)
        self.stored[route.name] = definition
        self.routes[route.name] = route

    async def delete(self, name: str) -> None:
        await self.records.delete_route(name)
        self.stored.pop(name, None)
        self.routes.pop(name, None)

    def changes(self, table: dict[str, Definition]) -> tuple[dict[str, Route], list[str]]:
        """What a stored table changes here: routes to adopt, and stored routes deleted since the last one applied.
        A config route that was never changed at runtime is not in the table, so its deletion on another replica
        does not reach this one (it is a default here, from the same config)."""
        changed = {name: Route.model_validate_json(d) for name, d in table.items() if self.stored.get(name) != d}
        return changed, [name for name in self.stored if name not in table]

    def applied(self, table: dict[str, Definition], adopted: list[Route], deleted: list[str]) -> None:
        """Switch to `table`, except for changed routes missing from `adopted` (not servable here yet): those keep
        their old definition and count as not applied, so the next table tries them again."""
        for route in adopted:
            self.routes[route.name] = route
        for name in deleted:
            self.routes.pop(name, None)
        kept = {name for name in table if self.stored.get(name) != table[name]} - {r.name for r in adopted}
        self.stored = {name: d for name, d in table.items() if name not in kept}

    def referencing(self, version: str) -> list[str]:
        """Routes that send traffic to `version`."""
        return [r.name for r in self.routes.values() if r.weight_of(version) > 0]


def embedded_router(connection: sqlite3.Connection, defaults: dict[str, Route]) -> Router:
    """One gateway's router on its SQLite state file."""
    records = SqliteRecords(connection)
    return Router(records, defaults, records.stored_routes())
