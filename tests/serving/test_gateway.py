"""The gateway's own bookkeeping against in-memory engines: one identity per version, route changes, and the
Prometheus series each served version gets before its first request (on-demand engines and adapters:
test_on_demand.py; the real engine: the e2e tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serving.errors import InvalidRequestError, StateUnavailableError
from serving.gateway import Gateway
from serving.router.routes import Route, RouteMember
from serving.settings import StateSettings
from tests.serving.fake_engine import started_gateway


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:
    gateway = await started_gateway(tmp_path / "state.db", "base", "new")
    yield gateway
    await gateway.stop()


def series(version: str, route: str) -> str:
    return f'servekit_requests_total{{model="{version}",route="{route}",status="500",version="{version}:v1"}} 0.0'


async def test_every_served_version_and_route_member_has_its_series_before_its_first_request(gateway):
    assert series("base", "base") in gateway.metrics.render([]).decode()
    assert series("new", "chat") not in gateway.metrics.render([]).decode()
    await gateway.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
    assert series("new", "chat") in gateway.metrics.render([]).decode()


async def test_a_version_named_by_its_public_name_or_its_registry_tag_is_one_version(gateway):
    by_tag = await gateway.set_route(Route(name="chat", members=[RouteMember(version="new:v1", weight=100)]))
    assert by_tag.versions == ["new"], "routes store the served name"
    assert gateway.versions.resolve("base:v1") is gateway.versions["base"]
    assert gateway.identify("base:v1") == gateway.identify("base") == "base"
    halves = [RouteMember(version="new", weight=50), RouteMember(version="new:v1", weight=50)]
    twice = Route(name="chat", members=halves)
    with pytest.raises(InvalidRequestError, match="appears twice"):
        await gateway.set_route(twice)
    assert gateway.router.routes["chat"].versions == ["new"], "a refused change leaves the route as it was"


async def test_replicas_on_one_redis_route_by_the_same_table_and_keep_theirs_while_it_is_down(tmp_path, redis_server):
    """A route changed through one replica is applied by the other (its members made servable there first); while
    Redis is down a change is refused on every replica rather than applied on one, and each keeps routing by the
    table it had; once Redis is back changes are shared again, without a restart."""
    state = StateSettings(url=redis_server.url, routes_poll_s=0.05, retry_s=0.05)
    a, b = [await started_gateway(tmp_path / f"{n}.db", "base", "new", state=state) for n in "ab"]

    async def applied_by_b(route: Route) -> None:
        async with asyncio.timeout(5):
            while b.route(route.name) != route:
                await asyncio.sleep(0.01)

    try:
        await applied_by_b(await a.set_route(Route(name="chat", members=[RouteMember(version="new:v1", weight=100)])))
        assert b.route("chat").versions == ["new"]
        await b.delete_route("chat")
        async with asyncio.timeout(5):
            while a.route("chat") is not None:
                await asyncio.sleep(0.01)
        kept = await a.set_route(Route(name="chat", members=[RouteMember(version="base", weight=100)]))
        await applied_by_b(kept)

        redis_server.stop()
        with pytest.raises(StateUnavailableError):
            await a.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
        async with asyncio.timeout(5):  # B's route watcher meets the outage: counted, and B keeps its table
            while not b.metrics.registry.get_sample_value("servekit_state_errors_total", {"operation": "routes"}):
                await asyncio.sleep(0.01)
        assert a.route("chat") == b.route("chat") == kept

        redis_server.start()  # without persistence: empty (a production Redis keeps its data)
        async with asyncio.timeout(5):
            while True:
                try:
                    moved = await a.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
                    break
                except StateUnavailableError:  # refused at once until the back-off lets a call probe again
                    await asyncio.sleep(0.01)
        await applied_by_b(moved)
    finally:
        for gateway in (a, b):
            await gateway.stop()
            await gateway.shared.close()
