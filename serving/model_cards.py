"""`/v1/models`: every callable name with what serves it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from serving.protocol import ModelCard, ModelList
from serving.router.routes import Route
from serving.versions import ServedVersions


def model_cards(
    versions: ServedVersions, routes: Iterable[Route], configured: frozenset[str], caps: Mapping[str, int]
) -> ModelList:
    """Served versions, then routes (`engine: route`, `root` = the heaviest member's registry version, ready
    when every member is)."""
    cards = [
        ModelCard(
            id=served.name,
            created=served.created,
            root=served.version,
            parent=served.parent,
            max_model_len=served.max_model_len,
            engine=served.supervisor.backend.engine_name,
            ready=served.supervisor.ready,
            on_demand=served.engine not in configured,
            max_in_flight=caps.get(served.engine) or None,
            capacity=served.capacity.knee if served.capacity else None,
        )
        for served in versions.values()
    ]
    for route in routes:
        members = [s for v in route.versions if (s := versions.find(v)) is not None]
        primary = versions.find(route.primary)
        cards.append(
            ModelCard(
                id=route.name,
                created=min((m.created for m in members), default=0),
                root=primary.version if primary else "",
                max_model_len=min((m.max_model_len for m in members), default=None),
                engine="route",
                ready=bool(members) and all(m.supervisor.ready for m in members),
            )
        )
    return ModelList(data=cards)
