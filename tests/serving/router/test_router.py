from __future__ import annotations

from serving.router.router import Router, embedded_router
from serving.router.routes import Route, RouteMember
from serving.settings import StateSettings
from serving.state import connect
from serving.state.redis_records import RouteWatcher
from serving.state.shared import SharedState

CONFIG = {"chat": Route(name="chat", members=[RouteMember(version="base", weight=100)])}
"""A route from `servekit.yaml`: every replica starts with it as a default."""
CHANGED = Route(name="chat", members=[RouteMember(version="base", weight=50), RouteMember(version="new", weight=50)])


async def test_runtime_changes_persist_and_win_over_config_defaults(tmp_path):
    defaults = {"assistant": Route(name="assistant", members=[RouteMember(version="base", weight=100)])}
    router = embedded_router(connect(tmp_path / "state.db"), defaults)
    changed = Route(
        name="assistant",
        members=[RouteMember(version="base", weight=50), RouteMember(version="new", weight=50)],
    )
    await router.set(changed)
    reopened = embedded_router(connect(tmp_path / "state.db"), defaults)
    assert reopened.routes["assistant"] == changed
    assert reopened.referencing("new") == ["assistant"]


def test_pins_win_and_plain_versions_resolve_to_themselves(tmp_path):
    router = embedded_router(
        connect(tmp_path / "s.db"), {"r": Route(name="r", members=[RouteMember(version="a", weight=100)])}
    )
    assert router.resolve("r", "user-1", None) == "a"
    assert router.resolve("r", "user-1", "b") == "b"
    assert router.resolve("a", None, None) == "a"


def watching(router: Router, poll_s: float) -> RouteWatcher:
    """A replica's watcher applying the shared table to `router` as `Gateway.apply_routes` does (every member is
    servable here)."""

    async def apply(table: dict[str, str]) -> None:
        changed, deleted = router.changes(table)
        router.applied(table, list(changed.values()), deleted)

    return RouteWatcher(router.records, apply, poll_s)


async def test_a_config_route_deleted_on_one_replica_is_gone_from_the_others_and_after_a_restart(redis_server):
    states = [SharedState.open(StateSettings(url=redis_server.url)) for _ in range(4)]

    def replica(state: SharedState) -> Router:
        return Router(state.records(), CONFIG, state.stored_routes())

    try:
        a, b = replica(states[0]), replica(states[1])
        watcher = watching(b, poll_s=0.05)
        await watcher.poll()
        assert b.routes == CONFIG, "a config route never changed at runtime is a default, not stored"
        await a.delete("chat")
        assert "chat" not in a.routes
        assert await watcher.poll() and "chat" not in b.routes, "the tombstone reaches the other replica"
        assert b.resolve("chat", "user-1", None) == "chat", "a name that is no route is a version of its own"
        assert "chat" not in replica(states[2]).routes, "a replica (re)started from the same config"
        await a.set(CHANGED)  # created again: the tombstone is replaced
        assert await watcher.poll() and b.routes["chat"] == CHANGED
        assert replica(states[3]).routes["chat"] == CHANGED
    finally:
        for state in states:
            await state.close()


async def test_a_config_route_deleted_in_the_state_file_stays_deleted_after_a_restart(tmp_path):
    router = embedded_router(connect(tmp_path / "state.db"), CONFIG)
    await router.delete("chat")
    restarted = embedded_router(connect(tmp_path / "state.db"), CONFIG)
    assert restarted.routes == {} and restarted.referencing("base") == []
    await restarted.set(CHANGED)
    assert embedded_router(connect(tmp_path / "state.db"), CONFIG).routes == {"chat": CHANGED}
