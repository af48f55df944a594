"""What rollouts need of the gateway, as a narrow port: the routes, the identity of versions, and making a
version servable. `serving.gateway.Gateway` implements it; the controller depends on this alone."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from serving.router.routes import Route


class ServedName(Protocol):
    """A version once servable: its served name and the registry version (tag) behind it."""

    name: str
    version: str


class RouteTable(Protocol):
    def route(self, name: str) -> Route | None:
        """The route called `name`, if there is one."""
        ...

    def route_names(self) -> list[str]: ...

    def identify(self, name: str) -> str:
        """The served name `name` stands for (a public name or a registry tag of one version give the same)."""
        ...

    def registry_version(self, name: str) -> str:
        """The registry tag behind a served name: the `version` label of its metrics."""
        ...

    async def prepare(self, name: str) -> ServedName:
        """Make `name` servable (an adapter loaded, a base's engine started and warm)."""
        ...

    def holding(self, versions: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Keep `versions` from being retired while a change that needs them is under way."""
        ...

    def expect_traffic(self, version: str, route: str) -> None:
        """Start `version`'s series for `route` at zero before its first request."""
        ...

    async def set_route(self, route: Route, token: int | None = None) -> Route:
        """Store `route`; `token`: the controller's lease token, refused (LeaseLostError, nothing changed) once
        another replica holds the lease; None for an admin's change."""
        ...
