"""Which version serves a request: the named version, a route member, the pin header, the breaker's fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from serving.errors import EngineUnavailableError, ModelNotFoundError, OverloadedError
from serving.gateway import Gateway
from serving.pipeline.choice import CLIENT_CLOSED_REQUEST, VersionChoice, engine_outcome
from serving.router.breaker import Breakers
from serving.router.routes import Route, RouteMember
from tests.conftest import ManualClock
from tests.serving.fake_engine import started_gateway


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:
    gateway = await started_gateway(tmp_path / "state.db", "base", "new")
    await gateway.set_route(Route(name="chat", members=[RouteMember(version="new", weight=100)]))
    yield gateway
    await gateway.stop()


def choice(gateway: Gateway, breakers: Breakers | None = None, **fallbacks: str) -> VersionChoice:
    return VersionChoice(gateway.router, gateway.versions, breakers or Breakers(0, 1.0), fallbacks)


async def test_a_request_goes_to_the_named_version_or_a_route_member(gateway):
    chooser = choice(gateway)
    assert chooser.choose("base", None, None) == (gateway.versions["base"], False)
    assert chooser.choose("chat", "user-1", None) == (gateway.versions["new"], False)
    with pytest.raises(ModelNotFoundError) as unknown:
        chooser.choose("nosuch", None, None)
    assert "base" in unknown.value.message and "new" in unknown.value.message


async def test_a_registry_tag_or_the_pin_header_names_the_same_version(gateway):
    chooser = choice(gateway)
    assert chooser.choose("base:v1", None, None) == (gateway.versions["base"], False)
    assert chooser.choose("chat", None, "base:v1") == (gateway.versions["base"], False)


async def test_an_open_breaker_sends_the_route_to_its_fallback_or_refuses_with_retry_after(gateway):
    breakers = Breakers(threshold=1, open_s=30, clock=ManualClock())
    breakers.record("new", False)
    with pytest.raises(EngineUnavailableError) as refused:
        choice(gateway, breakers).choose("chat", None, None)
    assert refused.value.retry_after_s == 30
    assert choice(gateway, breakers, chat="base").choose("chat", None, None) == (gateway.versions["base"], True)


def test_only_the_engines_own_failures_count_against_it():
    assert engine_outcome(200) is True
    assert engine_outcome(400) is True  # the engine answered; the request was bad
    assert engine_outcome(503) is False
    assert engine_outcome(CLIENT_CLOSED_REQUEST) is None
    assert engine_outcome(503, OverloadedError("full")) is None  # shed by the gateway, the engine never saw it
