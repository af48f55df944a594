"""LoRA affinity carried out on fake engines: which replicas load an adapter, when one more does, what is unloaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serving.backends.supervisor import EngineSupervisor
from serving.errors import EngineUnavailableError
from serving.pool.placement import AdapterPlacement, carried
from serving.pool.policies.least_loaded import LeastLoaded
from serving.pool.policy import Reason, RequestContext
from serving.pool.pool import EnginePool
from serving.pool.replica import Replica
from serving.settings import WarmupSettings
from tests.serving.fake_engine import FAST, FakeEngine


@pytest.fixture
async def pool() -> AsyncIterator[EnginePool]:
    """Three warm replicas on fake engines."""
    healthy = asyncio.Event()
    healthy.set()
    supervisors = [EngineSupervisor(FakeEngine("m", healthy), FAST, WarmupSettings()) for _ in range(3)]
    for supervisor in supervisors:
        supervisor.start()
    await asyncio.gather(*(supervisor.wait_ready(5) for supervisor in supervisors))
    yield EnginePool("m", [Replica(f"m/{i}", supervisor=s) for i, s in enumerate(supervisors)], LeastLoaded())
    await asyncio.gather(*(supervisor.stop() for supervisor in supervisors))


def loaded(pool: EnginePool) -> dict[str, list[str]]:
    """What each fake engine was asked to load (and not unloaded since)."""
    return {r.id: list(r.supervisor.backend.adapters) for r in pool.replicas.values()}  # type: ignore[union-attr]


async def test_an_adapter_is_loaded_on_its_k_least_loaded_replicas_and_served_there_only(pool) -> None:
    pool.replicas["m/0"].in_flight = 3
    await AdapterPlacement(k=2, load_bound=4, max_loras=4).carry(pool, "pirate", "/a/pirate")
    assert loaded(pool) == {"m/0": [], "m/1": ["pirate"], "m/2": ["pirate"]}
    choices = [pool.choose(RequestContext(adapter="pirate")) for _ in range(10)]
    assert {c.replica.id for c in choices} == {"m/1", "m/2"}
    assert {c.reason for c in choices} == {Reason.adapter_affinity}


async def test_requests_arriving_together_load_it_once(pool) -> None:
    placement = AdapterPlacement(k=1, load_bound=4, max_loras=4)
    await asyncio.gather(*(placement.carry(pool, "pirate", "/a/pirate") for _ in range(5)))
    assert sum(names.count("pirate") for names in loaded(pool).values()) == 1


async def test_one_more_replica_loads_it_in_the_background_when_every_carrier_is_over_the_bound(pool) -> None:
    placement = AdapterPlacement(k=1, load_bound=2, max_loras=4)
    await placement.carry(pool, "pirate", "/a/pirate")
    (carrier,) = [r for r in pool.replicas.values() if "pirate" in r.adapters]
    carrier.in_flight = 2
    await placement.carry(pool, "pirate", "/a/pirate")
    assert sum("pirate" in names for names in loaded(pool).values()) == 1, "within the bound: the carrier serves"
    carrier.in_flight = 3
    await placement.carry(pool, "pirate", "/a/pirate")  # does not wait: the carrier keeps serving meanwhile
    async with asyncio.timeout(5):
        while sum("pirate" in names for names in loaded(pool).values()) < 2:
            await asyncio.sleep(0)
    await placement.stop()


async def test_a_full_replica_unloads_its_least_recently_used_adapter_first(pool) -> None:
    for replica in list(pool.replicas.values())[1:]:
        pool.mark_failed(replica)  # one routable replica, so every adapter lands on it
    placement = AdapterPlacement(k=1, load_bound=4, max_loras=2)
    await placement.carry(pool, "pirate", "/a/pirate")
    await placement.carry(pool, "chef", "/a/chef")
    pool.choose(RequestContext(adapter="pirate"))  # pirate used after chef: chef is the least recently used
    await placement.carry(pool, "poet", "/a/poet")
    assert loaded(pool)["m/0"] == ["pirate", "poet"]
    assert set(pool.replicas["m/0"].adapters) == {"pirate", "poet"}
    await placement.carry(pool, "chef", "/a/chef")  # asked for again: loaded again, in place of pirate
    assert set(pool.replicas["m/0"].adapters) == {"poet", "chef"}


async def test_a_load_every_engine_refuses_is_raised_to_the_waiting_request(pool) -> None:
    async def refuse(name: str, path: str) -> None:
        raise EngineUnavailableError("engine unreachable")

    for replica in pool.replicas.values():
        replica.supervisor.backend.load_adapter = refuse  # type: ignore[union-attr, method-assign]
    with pytest.raises(EngineUnavailableError):
        await AdapterPlacement(k=2, load_bound=4, max_loras=4).carry(pool, "pirate", "/a/pirate")
    assert not carried(pool, "pirate")


async def test_a_replica_coming_up_loads_what_it_carried_and_what_lacks_carriers(pool) -> None:
    placement = AdapterPlacement(k=1, load_bound=4, max_loras=4)
    first, second, _ = pool.replicas.values()
    first.adapters["pirate"] = 1
    assert placement.wanted_on(pool, first, "pirate"), "a restarted carrier loads it again"
    assert not placement.wanted_on(pool, second, "pirate"), "k carriers already"
    assert placement.wanted_on(pool, second, "chef"), "nobody carries chef yet"
