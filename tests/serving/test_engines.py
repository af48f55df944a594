"""The engines' in-flight slots against in-memory engines (start/retire of on-demand ones: test_on_demand.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from serving.backends.supervisor import EngineSupervisor
from serving.engine_views import engine_report, engine_states
from serving.engines import DEFAULT_MAX_IN_FLIGHT, Engines
from serving.errors import EngineUnavailableError, ModelNotFoundError, OverloadedError
from serving.metrics.prometheus import GatewayMetrics
from serving.model_cards import model_cards
from serving.pool.discovery import DiscoveredReplicas, DnsDiscovery
from serving.protocol import CapacityProfile
from serving.registry.store import RegisteredModel
from serving.settings import DiscoverySettings, PoolSettings, WarmupSettings
from serving.versions import ServedVersion, ServedVersions
from tests.serving.fake_engine import FAST, FakeEngine, adapter_of, served_version, started_gateway
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


async def test_an_adapter_rides_on_k_replicas_and_the_views_say_which(tmp_path):
    base = served_version("base", replicas=3)
    engines = Engines(ServedVersions(), [base], GatewayMetrics(), pool=PoolSettings(adapter_replicas=2))
    engines.start()
    try:
        await asyncio.gather(*(replica.wait_ready(5) for replica in base.replicas))
        pirate = adapter_of(base, "pirate")
        await engines.load_adapter(pirate)
        carriers = {r.id for r in engines.pools["base"].replicas.values() if "pirate:v1" in r.adapters}
        assert len(carriers) == 2
        for _ in range(6):
            await engines.carry(pirate)
            slot = engines.admit(pirate)
            assert slot.replica.id in carriers
            engines.release(pirate, slot)
        assert engines.choices.labels("prefix_affinity", "adapter_affinity")._value.get() == 6
        cards = {card.id: card for card in model_cards(engines.versions, [], engines).data}
        assert set(cards["pirate:v1"].replicas) == carriers
        assert cards["base"].replicas == ["base/0", "base/1", "base/2"]
        report = {status.name: status.adapters for status in engine_report(engines)}
        assert {name for name, adapters in report.items() if adapters == ["pirate:v1"]} == carriers

        await engines.unload_adapter(pirate)
        assert not any(r.adapters for r in engines.pools["base"].replicas.values())
        assert all(not replica.backend.adapters for replica in base.replicas)
    finally:
        await engines.stop()


async def test_a_restarted_replica_loads_only_the_adapters_it_carried(tmp_path):
    base = served_version("base", replicas=2)
    engines = Engines(ServedVersions(), [base], GatewayMetrics(), pool=PoolSettings(adapter_replicas=1))
    engines.start()
    try:
        await asyncio.gather(*(replica.wait_ready(5) for replica in base.replicas))
        await engines.load_adapter(adapter_of(base, "pirate"))
        (carrier,) = [r for r in engines.pools["base"].replicas.values() if r.adapters]
        other = next(r for r in engines.pools["base"].replicas.values() if r is not carrier)
        for replica in (carrier, other):
            replica.supervisor.backend.adapters.clear()  # an engine process that restarted knows no adapters
            await engines._reload_adapters(base, replica)
        assert (carrier.supervisor.backend.adapters, other.supervisor.backend.adapters) == (["pirate:v1"], [])
    finally:
        await engines.stop()


class Dns:
    """A resolver whose answer the test changes; no addresses: the name does not resolve."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.addresses


def discovered(dns: Dns) -> ServedVersion:
    """A version served only by replicas found under `engines.test` (fake engines, healthy at once)."""
    healthy = asyncio.Event()
    healthy.set()
    settings = DiscoverySettings(host="engines.test", port=8000, interval_s=0.01)
    found = DiscoveredReplicas(
        DnsDiscovery(settings, dns, key="engine.discovery"),
        "fake",
        lambda url: EngineSupervisor(FakeEngine("found", healthy), FAST, WarmupSettings()),
    )
    model = RegisteredModel("found:v1", Path("/m/found"), {"kind": "base"}, {})
    return ServedVersion("found", model, None, 2048, "found", discovery=found)


async def until(condition, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_replicas_found_by_dns_join_once_warm_and_leave_when_the_name_drops_them(caplog):
    dns = Dns()
    found = discovered(dns)
    versions = ServedVersions()
    engines = Engines(versions, [found], GatewayMetrics())
    with caplog.at_level(logging.WARNING, logger="serving.pool.discovery"):
        engines.start()
        try:
            await until(lambda: dns.lookups >= 3)  # a few lookups that fail
            assert not engines.ready(set()), "no replica yet"
            with pytest.raises(EngineUnavailableError, match="no ready replica"):
                engines.admit(found)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and warnings[0].startswith("engine.discovery.host: engines.test does not")

            dns.addresses = ["10.0.0.1", "10.0.0.2"]
            await until(lambda: engines.ready(set()) and len(engines.pools["found"].routable()) == 2)
            assert sorted(engine_states(engines)) == ["found/10.0.0.1:8000", "found/10.0.0.2:8000"]
            assert {engines.admit(found).replica.id for _ in range(4)} == set(engine_states(engines))
            card = model_cards(versions, [], engines).data[0]
            assert (card.engine, card.ready, len(card.replicas)) == ("fake", True, 2)

            gone = engines.pools["found"].replicas["found/10.0.0.1:8000"].supervisor
            dns.addresses = ["10.0.0.2"]
            await until(lambda: len(engines.pools["found"].replicas) == 1)
            assert gone.state == "stopped" and gone not in found.replicas
            assert engines.ready(set())
            dns.addresses = []  # a lookup failing leaves the replicas as they are
            failing_since = dns.lookups
            await until(lambda: dns.lookups >= failing_since + 3)
            assert list(engine_states(engines)) == ["found/10.0.0.2:8000"]
        finally:
            await engines.stop()
    assert found.replicas[0].state == "stopped"


async def test_discovery_adds_to_managed_replicas_and_a_found_replica_loads_adapters_lacking_carriers():
    dns = Dns()
    base = served_version("base")
    base.discovery = discovered(dns).discovery
    engines = Engines(ServedVersions(), [base], GatewayMetrics(), pool=PoolSettings(adapter_replicas=2))
    engines.start()
    try:
        await base.replicas[0].wait_ready(5)
        await engines.load_adapter(adapter_of(base, "pirate"))
        dns.addresses = ["10.0.0.5"]
        await until(lambda: len(engines.pools["base"].routable()) == 2)
        joined = engines.pools["base"].replicas["base/10.0.0.5:8000"]
        assert joined.supervisor.backend.adapters == ["pirate:v1"], "the second of k=2 carriers"
        assert list(engine_states(engines)) == ["base/0", "base/10.0.0.5:8000"]
    finally:
        await engines.stop()


async def test_a_request_for_an_adapter_unloaded_meanwhile_is_a_404_and_loads_nothing():
    base = served_version("base", replicas=2)
    engines = Engines(ServedVersions(), [base], GatewayMetrics())
    engines.start()
    try:
        await asyncio.gather(*(replica.wait_ready(5) for replica in base.replicas))
        pirate = adapter_of(base, "pirate")
        await engines.load_adapter(pirate)
        await engines.unload_adapter(pirate)
        with pytest.raises(ModelNotFoundError):
            await engines.carry(pirate)  # the request resolved the name before the unload
        assert all(not replica.backend.adapters for replica in base.replicas)
    finally:
        await engines.stop()


async def test_a_pooled_engines_log_lines_name_its_replica(caplog):
    pooled, single = served_version("base", replicas=2), served_version("solo")
    engines = Engines(ServedVersions(), [pooled, single], GatewayMetrics())
    with caplog.at_level(logging.INFO, logger="serving.backends.supervisor"):
        engines.start()
        try:
            await asyncio.gather(*(replica.wait_ready(5) for replica in [*pooled.replicas, *single.replicas]))
        finally:
            await engines.stop()
    ready = sorted(r.getMessage() for r in caplog.records if r.getMessage().endswith("warming -> ready"))
    assert ready == [
        "engine base/0: warming -> ready",
        "engine base/1: warming -> ready",
        "engine solo: warming -> ready",
    ]
