from __future__ import annotations

from serving.router.router import embedded_router
from serving.router.routes import Route, RouteMember
from serving.state import connect


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
