"""The engines' in-flight slots against in-memory engines (start/retire of on-demand ones: test_on_demand.py)."""

from __future__ import annotations

import pytest

from serving.errors import EngineUnavailableError, OverloadedError
from tests.serving.fake_engine import served_version, started_gateway


async def test_the_in_flight_cap_sheds_at_once_and_frees_on_release(tmp_path):
    gateway = await started_gateway(tmp_path / "state.db", "base", "new", max_in_flight=2)
    engines, base = gateway.engines, gateway.versions["base"]
    try:
        taken = [engines.admit(base), engines.admit(base)]
        with pytest.raises(OverloadedError):
            engines.admit(base)
        assert engines.admit(gateway.versions["new"]) == "new"  # another engine has its own cap
        engines.release(base, taken[0])
        assert engines.admit(base) == "base"
    finally:
        await gateway.stop()


async def test_a_cold_engine_takes_no_request(tmp_path):
    gateway = await started_gateway(tmp_path / "state.db", "base")
    try:
        cold = served_version("cold")  # never started
        with pytest.raises(EngineUnavailableError):
            gateway.engines.admit(cold)
        assert gateway.engines.in_flight["cold"] == 0
    finally:
        await gateway.stop()
