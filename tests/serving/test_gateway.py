"""The gateway's own bookkeeping against in-memory engines: which version serves a request, the per-engine
in-flight cap, and the Prometheus series each served version gets before its first request (on-demand engines
and adapters: test_gateway_ondemand.py; the real engine: the e2e tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from serving.errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError, OverloadedError
from serving.gateway import Gateway
from serving.router.breaker import Breakers
from serving.router.routes import Route, RouteMember
from tests.conftest import ManualClock
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


async def test_a_request_goes_to_the_named_version_or_a_route_member(gateway):
    await gateway.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
    assert gateway.serving_version("base", None, None) == (gateway.versions["base"], False)
    assert gateway.serving_version("chat", "user-1", None) == (gateway.versions["new"], False)
    with pytest.raises(ModelNotFoundError) as unknown:
        gateway.serving_version("nosuch", None, None)
    assert "base" in unknown.value.message and "new" in unknown.value.message


async def test_a_version_named_by_its_public_name_or_its_registry_tag_is_one_version(gateway):
    by_tag = await gateway.set_route(Route(name="chat", members=[RouteMember(version="new:v1", weight=100)]))
    assert by_tag.versions == ["new"], "routes store the served name"
    assert gateway.serving_version("base:v1", None, None) == (gateway.versions["base"], False)
    assert gateway.serving_version("chat", None, "base:v1") == (gateway.versions["base"], False)
    assert gateway.identify("base:v1") == gateway.identify("base") == "base"
    halves = [RouteMember(version="new", weight=50), RouteMember(version="new:v1", weight=50)]
    twice = Route(name="chat", members=halves)
    with pytest.raises(InvalidRequestError, match="appears twice"):
        await gateway.set_route(twice)
    assert gateway.router.routes["chat"].versions == ["new"], "a refused change leaves the route as it was"


async def test_an_open_breaker_sends_the_route_to_its_fallback_or_refuses_with_retry_after(gateway):
    clock = ManualClock()
    gateway.breakers = Breakers(threshold=1, open_s=30, clock=clock)
    await gateway.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
    gateway.breakers.record("new", False)
    with pytest.raises(EngineUnavailableError) as refused:
        gateway.serving_version("chat", None, None)
    assert refused.value.retry_after_s == 30
    gateway.fallbacks["chat"] = "base"
    assert gateway.serving_version("chat", None, None) == (gateway.versions["base"], True)


async def test_the_in_flight_cap_sheds_at_once_and_frees_on_release(gateway):
    gateway.max_in_flight_per_engine = 2
    base = gateway.versions["base"]
    engines = [gateway.admit(base), gateway.admit(base)]
    with pytest.raises(OverloadedError):
        gateway.admit(base)
    assert gateway.admit(gateway.versions["new"]) == "new"  # another engine has its own cap
    gateway.release(base, engines[0])
    assert gateway.admit(base) == "base"
