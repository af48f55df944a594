"""The gateway's own bookkeeping against in-memory engines: one identity per version, route changes, and the
Prometheus series each served version gets before its first request (on-demand engines and adapters:
test_on_demand.py; the real engine: the e2e tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from serving.errors import InvalidRequestError
from serving.gateway import Gateway
from serving.router.routes import Route, RouteMember
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
