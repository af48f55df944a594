"""`/v1/models`: every callable name with what serves it (a pool's replicas; an adapter's carriers)."""

from __future__ import annotations

from collections.abc import Iterable

from serving.engines import Engines
from serving.protocol import ModelCard, ModelList
from serving.router.routes import Route
from serving.versions import ServedVersion, ServedVersions


def model_cards(versions: ServedVersions, routes: Iterable[Route], engines: Engines) -> ModelList:
    """Served versions, then routes (`engine: route`, `root` = the heaviest member's registry version, ready
    when every member is)."""
    cards = [
        ModelCard(
            id=served.name,
            created=served.created,
            root=served.version,
            parent=served.parent,
            max_model_len=served.max_model_len,
            engine=served.engine_name,
            ready=_ready(engines, served),
            on_demand=served.engine not in engines.configured,
            max_in_flight=engines.caps.get(served.engine) or None,
            capacity=served.capacity.knee if served.capacity else None,
            replicas=_replicas(engines, served),
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
                ready=bool(members) and all(_ready(engines, m) for m in members),
            )
        )
    return ModelList(data=cards)


def _ready(engines: Engines, served: ServedVersion) -> bool:
    """One ready replica of its pool (an adapter is loaded onto one on its first request if none carries it)."""
    pool = engines.pools.get(served.engine)
    return pool is not None and pool.ready


def _replicas(engines: Engines, served: ServedVersion) -> list[str] | None:
    """The ids of a pooled version's replicas (an adapter's: its carriers); None for a version on one engine."""
    base = engines.bases.get(served.engine)
    if base is None or not engines.pooled(base):
        return None
    replicas = engines.pools[served.engine].replicas.values()
    return [r.id for r in replicas if served.parent is None or served.engine_model in r.adapters]
