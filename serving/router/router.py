"""The route table: resolves a request's model name to the version that serves it, persists changes."""

from __future__ import annotations

import sqlite3
import time

from serving.router.assign import choose_version
from serving.router.routes import Route


class Router:
    def __init__(self, connection: sqlite3.Connection, defaults: dict[str, Route]) -> None:
        """Routes from config are the defaults; what was changed at runtime (stored) wins over them."""
        self._db = connection
        self.routes = dict(defaults)
        for name, definition in self._db.execute("SELECT name, definition FROM routes"):
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

    def set(self, route: Route) -> None:
        self.routes[route.name] = route
        self._db.execute(
            "INSERT OR REPLACE INTO routes (name, definition, updated_at) VALUES (?, ?, ?)",
            (route.name, route.model_dump_json(), time.time()),
        )

    def delete(self, name: str) -> None:
        self.routes.pop(name, None)
        self._db.execute("DELETE FROM routes WHERE name = ?", (name,))

    def referencing(self, version: str) -> list[str]:
        """Routes that send traffic to `version`."""
        return [r.name for r in self.routes.values() if r.weight_of(version) > 0]
