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


async def test_a_slot_is_given_back_on_every_exit_and_never_taken_on_a_cold_engine(tmp_path):
    gateway = await started_gateway(tmp_path / "state.db", "base")
    engines, base = gateway.engines, gateway.versions["base"]
    try:
        with pytest.raises(RuntimeError), engines.slot(base) as engine:
            assert engine is base.supervisor and engines.in_flight["base"] == 1
            raise RuntimeError("the request failed")
        assert engines.in_flight["base"] == 0
        cold = served_version("cold")  # never started
        with pytest.raises(EngineUnavailableError), engines.slot(cold):
            pass
        assert engines.in_flight["cold"] == 0
    finally:
        await gateway.stop()
