"""Start/retire bookkeeping of on-demand base engines, against in-memory engines and registry (the real vLLM
path is covered by test_gateway_ondemand_e2e.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving import versions as versions_module
from serving.backends.supervisor import EngineSupervisor
from serving.errors import EngineStartFailedError, ModelNotFoundError
from serving.gateway import Gateway
from serving.registry import store
from serving.registry.store import ModelMissingError, RegisteredModel
from serving.replica_sets import on_demand_engine
from serving.rollout.controller import RolloutController
from serving.rollout.policy import RolloutConfig
from serving.rollout.store import RolloutStore
from serving.router.router import embedded_router
from serving.router.routes import Route, RouteMember
from serving.settings import OnDemandSettings, Settings, WarmupSettings
from serving.state import connect
from serving.state.records import SqliteRecords
from serving.versions import LoraCapacity, ServedVersion
from tests.serving.fake_engine import FAST, FakeEngine

REGISTRY = {
    "base:v1": RegisteredModel("base:v1", Path("/m/base"), {"kind": "base"}, {}),
    "new:v2": RegisteredModel("new:v2", Path("/m/new"), {"kind": "base"}, {}),
    "merged:v3": RegisteredModel("merged:v3", Path("/m/merged"), {"kind": "merged"}, {}),
    "lora:a": RegisteredModel("lora:a", Path("/m/lora"), {"kind": "adapter", "base": "new:v2"}, {}),  # dir: fixture
}


class Engines:
    """The gateway's engine factory: builds fake engines and keeps them for the test to inspect."""

    def __init__(self, crash: bool = False) -> None:
        self.healthy = asyncio.Event()
        self.crash = crash
        self.built: dict[str, FakeEngine] = {}

    def __call__(self, name: str, model: RegisteredModel) -> ServedVersion:
        backend = self.built[name] = FakeEngine(name, self.healthy, self.crash)
        return ServedVersion(name, model, EngineSupervisor(backend, FAST, WarmupSettings()), 2048, name)


@pytest.fixture(autouse=True)
def registry(monkeypatch, tmp_path_factory):
    adapter_dir = tmp_path_factory.mktemp("lora")
    (adapter_dir / "adapter_config.json").write_text('{"r": 8, "target_modules": ["q_proj"]}')
    monkeypatch.setitem(REGISTRY, "lora:a", RegisteredModel("lora:a", adapter_dir, REGISTRY["lora:a"].labels, {}))

    def get_model_by_tag(ref: str) -> RegisteredModel:
        tag = ref if ":" in ref else next((t for t in REGISTRY if t.startswith(f"{ref}:")), ref)
        if tag not in REGISTRY:
            raise ModelMissingError(tag)
        return REGISTRY[tag]

    monkeypatch.setattr(versions_module, "get_model_by_tag", get_model_by_tag)


async def make_gateway(tmp_path: Path, engines: Engines, ready_timeout_s: float = 5) -> Gateway:
    healthy = asyncio.Event()
    healthy.set()
    base = FakeEngine("base", healthy)
    served = ServedVersion("base", REGISTRY["base:v1"], EngineSupervisor(base, FAST, WarmupSettings()), 2048, "base")
    router = embedded_router(connect(tmp_path / "state.db"), {})
    gateway = Gateway(
        [served], router, lora=LoraCapacity(16), engine_factory=engines,
        on_demand=OnDemandSettings(ready_timeout_s=ready_timeout_s),
    )  # fmt: skip
    gateway.start()
    await served.supervisor.wait_ready(5)
    return gateway


def route(name: str, **weights: float) -> Route:
    return Route(name=name, members=[RouteMember(version=v.replace("_", ":"), weight=w) for v, w in weights.items()])


async def until(condition, timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_route_to_an_unserved_base_takes_effect_only_once_its_engine_is_warm(tmp_path):
    engines = Engines()
    gateway = await make_gateway(tmp_path, engines)
    await gateway.set_route(route("chat", base=100))
    change = asyncio.create_task(gateway.set_route(route("chat", base=90, new_v2=10)))
    await until(lambda: "new:v2" in engines.built and engines.built["new:v2"].starts == 1)

    assert gateway.router.routes["chat"].versions == ["base"], "route changed before the new engine was warm"
    assert gateway.ready, "an engine starting for a route change must not turn /ready red"
    card = next(c for c in gateway.model_list().data if c.id == "new:v2")
    assert (card.ready, card.on_demand, card.engine, card.root) == (False, True, "fake", "new:v2")

    engines.healthy.set()
    await change
    assert gateway.router.routes["chat"].versions == ["base", "new:v2"]
    assert gateway.versions["new:v2"].supervisor.ready and gateway.ready
    assert not next(c for c in gateway.model_list().data if c.id == "base").on_demand
    await gateway.stop()


async def test_an_engine_nothing_routes_to_is_stopped_after_its_requests_finish(tmp_path):
    engines = Engines()
    engines.healthy.set()
    gateway = await make_gateway(tmp_path, engines)
    await gateway.set_route(route("chat", base=50, merged_v3=50))
    served = gateway.versions["merged:v3"]
    engine = gateway.engines.admit(served)

    await gateway.set_route(route("chat", base=100))
    assert "merged:v3" not in gateway.versions and "merged:v3" not in gateway.engines.bases
    await asyncio.sleep(0.05)
    assert engines.built["merged:v3"].running, "stopped while a request was still in flight"

    gateway.engines.release(served, engine)
    await until(lambda: not engines.built["merged:v3"].running)
    await until(lambda: not gateway.on_demand._retiring)
    await gateway.delete_route("chat")
    assert gateway.engines.bases.keys() == {"base"}, "a configured base was retired"
    await gateway.stop()


async def test_an_on_demand_base_used_by_another_route_or_promoted_keeps_serving(tmp_path):
    engines = Engines()
    engines.healthy.set()
    gateway = await make_gateway(tmp_path, engines)
    await gateway.set_route(route("a", base=90, new_v2=10))
    await gateway.set_route(route("b", new_v2=100))
    await gateway.set_route(route("a", base=100))
    assert gateway.versions["new:v2"].supervisor.ready, "retired while route b still uses it"
    first = engines.built["new:v2"]

    await gateway.delete_route("b")
    await gateway.set_route(route("a", base=90, new_v2=10))
    assert not first.running, "the retired engine still runs next to its successor"
    assert engines.built["new:v2"] is not first and engines.built["new:v2"].running

    await gateway.set_route(route("a", new_v2=100))  # promoted: the canary base is the route's only member
    assert gateway.versions["new:v2"].supervisor.ready and "base" in gateway.engines.bases
    await gateway.stop()


async def test_an_adapter_trained_for_an_on_demand_base_rides_on_it_and_keeps_it_alive(tmp_path):
    engines = Engines()
    engines.healthy.set()
    gateway = await make_gateway(tmp_path, engines)
    await gateway.set_route(route("chat", base=90, new_v2=10))
    await gateway.set_route(route("tuned", lora_a=100))
    assert gateway.versions["lora:a"].parent == "new:v2"
    assert engines.built["new:v2"].adapters == ["lora:a"]
    await gateway.set_route(route("chat", base=100))
    assert gateway.versions["new:v2"].supervisor.ready, "retired while an adapter on it is routed to"
    await gateway.delete_route("tuned")
    assert "new:v2" not in gateway.versions and "lora:a" not in gateway.versions
    await gateway.stop()


async def test_a_route_change_under_way_keeps_its_starting_engine_from_being_retired(tmp_path):
    engines = Engines()
    gateway = await make_gateway(tmp_path, engines)
    change = asyncio.create_task(gateway.set_route(route("a", base=90, new_v2=10)))
    await until(lambda: "new:v2" in engines.built)
    await gateway.set_route(route("b", base=100))
    assert "new:v2" in gateway.engines.bases
    engines.healthy.set()
    await change
    assert gateway.versions["new:v2"].supervisor.ready
    await gateway.stop()


async def test_an_engine_that_crashes_on_start_refuses_the_route_and_is_stopped(tmp_path):
    engines = Engines(crash=True)
    gateway = await make_gateway(tmp_path, engines)
    await gateway.set_route(route("chat", base=100))
    with pytest.raises(EngineStartFailedError) as failure:
        await gateway.set_route(route("chat", base=90, new_v2=10))
    assert failure.value.status_code == 503 and failure.value.code == "engine_start_failed"
    assert "not enough memory for the KV cache" in failure.value.message
    assert gateway.router.routes["chat"].versions == ["base"]
    assert "new:v2" not in gateway.versions and not engines.built["new:v2"].running
    assert engines.built["new:v2"].starts == 1, "the supervisor kept restarting a refused engine"
    await gateway.stop()


async def test_an_engine_not_warm_in_time_refuses_the_route_and_is_stopped(tmp_path):
    engines = Engines()
    gateway = await make_gateway(tmp_path, engines, ready_timeout_s=0.2)
    with pytest.raises(EngineStartFailedError, match=r"not warm after 0.2s"):
        await gateway.set_route(route("chat", base=90, new_v2=10))
    assert "chat" not in gateway.router.routes
    assert "new:v2" not in gateway.engines.bases and not engines.built["new:v2"].running
    await gateway.stop()


async def test_an_unknown_version_is_a_404_and_starts_nothing(tmp_path):
    engines = Engines()
    gateway = await make_gateway(tmp_path, engines)
    with pytest.raises(ModelNotFoundError):
        await gateway.set_route(route("chat", base=90, nosuch_v1=10))
    assert not engines.built and "chat" not in gateway.router.routes
    await gateway.stop()


def test_after_a_restart_a_stored_route_brings_its_on_demand_base_back_on_a_port_of_its_own(tmp_path):
    settings = Settings(home=tmp_path)
    asyncio.run(embedded_router(connect(settings.state_path), {}).set(route("chat", base=90, new_v2=5, lora_a=5)))
    gateway = Gateway.from_settings(settings, REGISTRY["base:v1"])
    restored = gateway.engines.bases["new:v2"]
    assert restored.name not in gateway.engines.configured
    assert restored.supervisor.backend.engine_name == "vllm"
    assert (
        restored.supervisor.backend.base_url != gateway.engines.bases[settings.model.name].supervisor.backend.base_url
    )
    assert gateway.versions["lora:a"].parent == "new:v2"
    assert not gateway.ready, "a routed on-demand engine that is not warm yet counts for /ready"


@pytest.mark.parametrize("engine", ["vllm", "triton"])
def test_an_on_demand_engine_gets_the_chosen_kind_on_free_ports_of_its_own(tmp_path, settings, engine):
    weights = store.get_model(settings.model.name).path  # Triton reads the tokenizer when it is built
    settings = Settings(home=tmp_path, on_demand=OnDemandSettings(engine=engine))
    served = on_demand_engine(settings, "new:v2", RegisteredModel("new:v2", weights, {"kind": "base"}, {}))
    backend = served.supervisor.backend
    assert (backend.engine_name, served.name, served.engine_model, served.version) == (engine, *["new:v2"] * 3)
    if engine == "triton":
        ports = [backend.settings.http_port, backend.settings.grpc_port, backend.settings.metrics_port]
        assert ports[1:] == [ports[0] + 1, ports[0] + 2] and ports[0] != settings.triton.http_port
    else:
        assert backend.settings.port != settings.engine.port and backend.settings.url is None


async def test_a_rollout_to_a_base_canary_starts_it_and_promotion_or_abort_retires_the_loser(tmp_path):
    engines = Engines()
    engines.healthy.set()
    gateway = await make_gateway(tmp_path, engines)
    store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    rollouts = RolloutController(gateway, observer=None, store=store, reports_dir=tmp_path)
    slow = RolloutConfig(steps=[10, 100], interval_s=3600)

    await gateway.set_route(route("chat", base=100))
    await rollouts.start("chat", "new:v2", slow)
    assert gateway.router.routes["chat"].weight_of("new:v2") == 10 and gateway.versions["new:v2"].supervisor.ready
    await rollouts.abort("chat")
    assert "new:v2" not in gateway.versions, "a rolled-back canary base kept its engine"

    await rollouts.start("chat", "new:v2", slow)
    await rollouts.promote("chat")
    await rollouts.start("chat", "merged:v3", slow)
    await rollouts.promote("chat")
    assert gateway.router.routes["chat"].versions == ["merged:v3"]
    assert "new:v2" not in gateway.versions, "the promoted-away on-demand primary kept its engine"
    assert gateway.versions["merged:v3"].supervisor.ready and "base" in gateway.engines.bases
    await rollouts.stop()
    await gateway.stop()


async def test_a_version_kept_by_another_user_is_not_retired_until_it_lets_go(tmp_path):
    engines = Engines()
    engines.healthy.set()
    gateway = await make_gateway(tmp_path, engines)
    shadowed: set[str] = set()
    gateway.kept_by.append(lambda: shadowed)
    await gateway.prepare("new:v2")  # e.g. a shadow run's candidate
    shadowed.add("new:v2")
    await gateway.set_route(route("chat", base=100))  # a change: retires what nothing uses
    assert gateway.versions["new:v2"].supervisor.ready, "retired while a shadow run still copies to it"
    shadowed.clear()
    await gateway.delete_route("chat")
    assert "new:v2" not in gateway.versions
    await gateway.stop()
