"""The engines' in-flight slots against in-memory engines (start/retire of on-demand ones: test_on_demand.py)."""

from __future__ import annotations

import pytest

from serving.engines import DEFAULT_MAX_IN_FLIGHT, Engines
from serving.errors import EngineUnavailableError, OverloadedError
from serving.metrics.prometheus import GatewayMetrics
from serving.model_cards import model_cards
from serving.protocol import CapacityProfile
from serving.versions import ServedVersions
from tests.serving.fake_engine import served_version, started_gateway
from tests.serving.registry.test_capacity import measured


async def test_the_in_flight_cap_sheds_at_once_and_frees_on_release(tmp_path):
    gateway = await started_gateway(tmp_path / "state.db", "base", "new", max_in_flight=2)
    engines, base = gateway.engines, gateway.versions["base"]
    try:
        taken = [engines.admit(base), engines.admit(base)]
        with pytest.raises(OverloadedError):
            engines.admit(base)
        assert engines.admit(gateway.versions["new"]).engine == "new"  # another engine has its own cap
        engines.release(base, taken[0])
        assert engines.admit(base).engine == "base"
    finally:
        await gateway.stop()


async def test_a_cold_engine_takes_no_request():
    cold = served_version("cold")  # never started
    engines = Engines(ServedVersions(), [cold], GatewayMetrics())
    with pytest.raises(EngineUnavailableError):
        engines.admit(cold)
    assert engines.in_flight["cold"] == 0


async def test_an_engine_profiled_with_servekit_capacity_is_capped_at_its_knee_unless_a_cap_is_set(tmp_path):
    profile = CapacityProfile.model_validate(measured(10))  # knee: 10 users
    profiled = served_version("base")
    profiled.capacity = profile
    versions = ServedVersions()
    engines = Engines(versions, [profiled], GatewayMetrics(), None, 0.9)
    assert engines.caps == {"base": 9}
    assert Engines(ServedVersions(), [profiled], GatewayMetrics(), 4, 0.9).caps == {"base": 4}, "an explicit cap wins"
    unprofiled = Engines(ServedVersions(), [served_version("new")], GatewayMetrics(), None)
    assert unprofiled.caps == {"new": DEFAULT_MAX_IN_FLIGHT}
    card = model_cards(versions, [], engines).data[0]
    assert (card.max_in_flight, card.capacity.concurrency) == (9, 10)
