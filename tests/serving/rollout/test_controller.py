"""The rollout controller's I/O around the pure policy: route weights, state, audit, gates and its tick loop,
against in-memory engines and a scripted observer (real traffic and Prometheus: test_rollout_e2e.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serving.backends.ports import free_port_block
from serving.errors import ConflictError, InvalidRequestError, ModelNotFoundError
from serving.gateway import Gateway
from serving.rollout.controller import RolloutController
from serving.rollout.observation import Observation, VersionStats
from serving.rollout.policy import ActionKind, Phase, RolloutConfig, RolloutState
from serving.rollout.store import RolloutStore
from serving.router.routes import Route, RouteMember
from serving.settings import StateSettings
from serving.state import connect
from serving.state.lease import EmbeddedLease, RedisLease
from serving.state.records import SqliteRecords, StateRecords
from tests.serving.fake_engine import started_gateway

HEALTHY = Observation(VersionStats(100, 0, 0.2, 1.0), VersionStats(100, 0, 0.2, 1.0), window_s=60)
FAILING = Observation(VersionStats(100, 0, 0.2, 1.0), VersionStats(100, 30, 0.2, 1.0), window_s=60)
TOO_FEW = Observation(VersionStats(100, 0, 0.2, 1.0), VersionStats(2, 0, 0.2, 1.0), window_s=60)
MANUAL = RolloutConfig(steps=[10, 50], interval_s=3600, min_requests=5, failure_threshold=2)
"""An interval no test waits for: the tests tick by hand."""


class ScriptedObserver:
    """Answers with the given observations in turn (the last one again when they run out); records each call."""

    def __init__(self, *observations: Observation) -> None:
        self.observations = list(observations)
        self.calls: list[tuple[str, str, str, float]] = []

    async def observe(self, route: str, primary: str, canary: str, window_s: float) -> Observation:
        self.calls.append((route, primary, canary, window_s))
        return self.observations.pop(0) if len(self.observations) > 1 else self.observations[0]


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:
    gateway = await started_gateway(tmp_path / "state.db", "base", "new")
    await gateway.set_route(Route(name="chat", members=[RouteMember(version="base", weight=100)]))
    yield gateway
    await gateway.stop()


def controller(gateway: Gateway, tmp_path: Path, *observations: Observation) -> RolloutController:
    store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    return RolloutController(gateway, ScriptedObserver(*observations), store, reports_dir=tmp_path)


BASE, NEW = "base", "new"
"""Served names: what routes and rollouts store. Observers are asked about the registry versions behind them
(`base:v1`, `new:v1`), the `version` label of the samples and series they read."""


def weights(gateway: Gateway) -> dict[str, float]:
    return {member.version: member.weight for member in gateway.router.routes["chat"].members}


async def test_healthy_steps_move_the_canary_up_and_the_last_one_promotes_it(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, HEALTHY)
    state = await rollouts.start("chat", "new", MANUAL)
    assert (state.phase, state.primary, state.canary) == (Phase.progressing, BASE, NEW)
    assert weights(gateway) == {BASE: 90, NEW: 10}
    assert (await rollouts.tick("chat")).kind is ActionKind.set_weight
    assert weights(gateway) == {BASE: 50, NEW: 50}
    assert (await rollouts.tick("chat")).kind is ActionKind.promote
    assert weights(gateway) == {NEW: 100}
    assert (await rollouts.status("chat")).phase is Phase.promoted
    assert rollouts.observer.calls == [("chat", "base:v1", "new:v1", 3600)] * 2, "by the `version` label"
    events = [entry["event"] for entry in (await rollouts.history("chat"))]
    assert events == ["started", "set_weight", "set_weight", "promote"]
    with pytest.raises(ConflictError):
        await rollouts.tick("chat")  # a finished rollout is not ticked again
    await rollouts.stop()


async def test_too_little_data_holds_the_step_and_repeated_failures_roll_back(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, TOO_FEW, FAILING, FAILING)
    await rollouts.start("chat", "new", MANUAL)
    assert (await rollouts.tick("chat")).kind is ActionKind.halt
    assert weights(gateway) == {BASE: 90, NEW: 10}
    first = await rollouts.tick("chat")
    assert first.kind is ActionKind.halt and "error rate 0.300" in first.reason
    assert weights(gateway) == {BASE: 90, NEW: 10} and (await rollouts.status("chat")).failed_checks == 1
    assert (await rollouts.tick("chat")).kind is ActionKind.rollback
    assert weights(gateway) == {BASE: 100}
    assert (await rollouts.status("chat")).phase is Phase.rolled_back
    last = (await rollouts.history("chat"))[-1]
    assert last["event"] == "rollback" and last["observation"]["canary"]["server_errors"] == 30
    await rollouts.stop()


async def test_a_paused_rollout_is_not_judged_until_resumed(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, HEALTHY)
    await rollouts.start("chat", "new", MANUAL)
    assert (await rollouts.pause("chat")).phase is Phase.paused
    assert (await rollouts.tick("chat")).kind is ActionKind.wait
    assert rollouts.observer.calls == [] and weights(gateway) == {BASE: 90, NEW: 10}
    with pytest.raises(ConflictError, match="only a progressing rollout can pause"):
        await rollouts.pause("chat")
    assert (await rollouts.resume("chat")).phase is Phase.progressing
    with pytest.raises(ConflictError, match="not paused"):
        await rollouts.resume("chat")
    await rollouts.tick("chat")
    assert weights(gateway) == {BASE: 50, NEW: 50}
    await rollouts.stop()


async def test_a_start_that_cannot_run_changes_nothing(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, HEALTHY)
    with pytest.raises(ModelNotFoundError):
        await rollouts.start("nosuch", "new", MANUAL)
    with pytest.raises(InvalidRequestError) as same:
        await rollouts.start("chat", "base", MANUAL)
    assert same.value.param == "canary"
    nobody_listens = f"http://127.0.0.1:{free_port_block(1, '127.0.0.1')}/gate"
    with pytest.raises(ConflictError, match=r"Pre-rollout gate failed: webhook .* unreachable"):
        await rollouts.start("chat", "new", MANUAL, pre_rollout_webhook=nobody_listens)
    assert weights(gateway) == {BASE: 100} and (await rollouts.store.get("chat")) is None
    zero = 'servekit_requests_total{model="new",route="chat",status="500",version="new:v1"} 0.0'
    assert zero in gateway.metrics.render([]).decode(), "the canary's series start before the gates run"
    assert (await rollouts.store.history("chat"))[-1]["event"] == "pre-rollout gate"
    await rollouts.start("chat", "new", MANUAL)
    with pytest.raises(ConflictError, match="already has a rollout"):
        await rollouts.start("chat", "new", MANUAL)
    await rollouts.stop()


async def test_rollback_aborts_a_running_rollout_and_returns_the_route_to_its_primary(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, HEALTHY)
    with pytest.raises(ConflictError, match="name a version"):
        await rollouts.rollback("chat", None)
    await rollouts.start("chat", "new", MANUAL)
    route = await rollouts.rollback("chat", None)
    assert route.versions == [BASE] and weights(gateway) == {BASE: 100}
    assert (await rollouts.status("chat")).phase is Phase.rolled_back
    assert (await rollouts.rollback("chat", "new")).versions == [NEW]
    assert [entry["event"] for entry in (await rollouts.history("chat"))][-3:] == ["aborted", "rollback", "rollback"]
    await rollouts.stop()


async def test_after_a_restart_an_unfinished_rollout_resumes_ticking_on_its_own(gateway, tmp_path):
    brisk = MANUAL.model_copy(update={"interval_s": 0.05})
    store = RolloutStore(SqliteRecords(connect(tmp_path / "state.db")))
    await gateway.set_route(
        Route(name="chat", members=[RouteMember(version="base", weight=90), RouteMember(version="new", weight=10)])
    )
    state = RolloutState(route="chat", primary=BASE, canary=NEW, config=brisk, phase=Phase.progressing)
    await store.save(state, None, "started", {}, None)
    rollouts = RolloutController(gateway, ScriptedObserver(HEALTHY), store, reports_dir=tmp_path)
    await rollouts.pick_up_unfinished()
    async with asyncio.timeout(5):
        while (await rollouts.status("chat")).phase is not Phase.promoted:
            await asyncio.sleep(0.01)
    assert weights(gateway) == {NEW: 100}
    assert [entry["event"] for entry in (await rollouts.history("chat"))] == [
        "started",
        "resumed",
        "set_weight",
        "promote",
    ]
    await rollouts.stop()


async def test_a_version_named_by_its_served_name_or_its_tag_is_one_version(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, HEALTHY)
    with pytest.raises(InvalidRequestError, match="already the primary"):
        await rollouts.start("chat", "base:v1", MANUAL)
    state = await rollouts.start("chat", "new:v1", MANUAL)
    assert (state.primary, state.canary) == (BASE, NEW) and weights(gateway) == {BASE: 90, NEW: 10}
    assert (await rollouts.history("chat"))[0]["primary"] == BASE
    await rollouts.stop()


NO_PRIMARY = Observation(VersionStats(0, 0, None, None), VersionStats(100, 0, 0.2, 1.0), window_s=60)
SLOW = Observation(VersionStats(0, 0, None, None), VersionStats(100, 0, 0.6, 3.0), window_s=60)


async def test_a_primary_without_traffic_halts_the_step_instead_of_passing_it(gateway, tmp_path):
    rollouts = controller(gateway, tmp_path, NO_PRIMARY)
    await rollouts.start("chat", "new", MANUAL)
    for _ in range(3):
        action = await rollouts.tick("chat")
        assert action.kind is ActionKind.halt and "no primary data" in action.reason
    state = await rollouts.status("chat")
    assert (state.phase, state.step, state.failed_checks) == (Phase.progressing, 0, 0)
    assert weights(gateway) == {BASE: 90, NEW: 10}
    await rollouts.stop()


@pytest.mark.parametrize(("at_full", "outcome"), [(HEALTHY, ActionKind.promote), (SLOW, ActionKind.halt)])
async def test_at_weight_100_the_canary_is_compared_with_the_primarys_last_window_with_traffic(
    gateway, tmp_path, at_full, outcome
):
    full = MANUAL.model_copy(update={"steps": [50, 100]})
    at_full = Observation(VersionStats(0, 0, None, None), at_full.canary, window_s=60)
    rollouts = controller(gateway, tmp_path, HEALTHY, at_full)
    await rollouts.start("chat", "new", full)
    assert (await rollouts.tick("chat")).kind is ActionKind.set_weight and weights(gateway) == {NEW: 100}
    action = await rollouts.tick("chat")
    assert action.kind is outcome and "primary: its last window with traffic, tick 2" in action.reason
    if outcome is ActionKind.halt:
        assert "TTFT p95 ratio 3.00" in action.reason and (await rollouts.status("chat")).failed_checks == 1
    reference = (await rollouts.status("chat")).primary_reference
    assert reference is not None and reference.stats == HEALTHY.primary
    await rollouts.stop()


STEPS = RolloutConfig(steps=[5, 10, 20, 30, 40, 50, 75, 100], interval_s=0.3, min_requests=5, failure_threshold=2)
"""Eight healthy decisions at 0.3 s: the first holder is still mid-way when its lease expires."""


async def test_a_rollout_ticks_on_the_lease_holder_alone_and_another_replica_finishes_it_after_the_holder_stalls(
    tmp_path, redis_server
):
    """Two replicas on one real redis-server. A rollout started through the replica without the lease is ticked
    by the holder; the holder's renewals then stall (its loop keeps running, like a paused process that wakes
    up): the other replica takes the lease after its expiry and finishes, the stalled one's next tick is refused
    by the fence and stops it, and the audit holds each decision exactly once, in order."""
    state = StateSettings(url=redis_server.url, lease_ttl_s=0.6, routes_poll_s=0.05, retry_s=0.05)
    gateways = [await started_gateway(tmp_path / f"{n}.db", "base", "new", state=state) for n in "ab"]
    a, b = (
        RolloutController(
            gw, ScriptedObserver(HEALTHY), RolloutStore(gw.router.records), tmp_path, lease=gw.shared.lease(),
            renew_s=0.1,
        )
        for gw in gateways
    )  # fmt: skip
    try:
        await gateways[0].set_route(Route(name="chat", members=[RouteMember(version="base", weight=100)]))
        a.start_holding()
        async with asyncio.timeout(10):
            while a.lease.token is None or gateways[1].route("chat") is None:
                await asyncio.sleep(0.01)
        b.start_holding()
        assert (await b.start("chat", "new", STEPS)).step == 0 and b.lease.token is None
        async with asyncio.timeout(10):
            while (await a.status("chat")).step < 1:  # ticked by the holder: B holds no lease
                await asyncio.sleep(0.01)
        assert not b._running("chat")
        # A's renewals hang, its loop goes on ticking until fenced. (Cancelling its holder task is no stall: redis-py
        # can swallow a cancellation that lands while a command's answer is read, and the renewals go on.)
        a.lease.acquire = asyncio.Event().wait
        async with asyncio.timeout(20):
            while (await b.status("chat")).phase is not Phase.promoted:
                await asyncio.sleep(0.02)
            while a._running("chat"):
                await asyncio.sleep(0.02)
        history = await b.history("chat")
        decisions = [(e["event"], e["canary_weight"]) for e in history if e["event"] in set(ActionKind)]
        assert decisions == [*((ActionKind.set_weight, w) for w in STEPS.steps), (ActionKind.promote, 100.0)]
        events = [e["event"] for e in history]
        assert events.count("resumed") == 1 and events.index("resumed") > events.index("set_weight")
        after_resume = events[events.index("resumed") :]
        assert "set_weight" in after_resume or "promote" in after_resume, "B made decisions after taking over"
        assert b.lease.token is not None and b.lease.token > 1
        for gateway in gateways:
            async with asyncio.timeout(5):
                while weights(gateway) != {NEW: 100}:  # the holder's route change, applied by both replicas
                    await asyncio.sleep(0.01)
    finally:
        for controller_, gateway in zip((a, b), gateways, strict=True):
            await controller_.stop()
            await gateway.stop()
            await gateway.shared.close()


async def test_a_replica_without_the_lease_carries_out_commands_and_a_tick_on_a_stale_state_is_refused(
    tmp_path, redis_server
):
    state = StateSettings(url=redis_server.url, lease_ttl_s=5, routes_poll_s=0.05)
    gateways = [await started_gateway(tmp_path / f"{n}.db", "base", "new", state=state) for n in "ab"]
    a, b = (
        RolloutController(gw, ScriptedObserver(HEALTHY), RolloutStore(gw.router.records), tmp_path) for gw in gateways
    )
    try:
        await gateways[0].set_route(Route(name="chat", members=[RouteMember(version="base", weight=100)]))
        async with asyncio.timeout(10):
            while gateways[1].route("chat") is None:
                await asyncio.sleep(0.01)
        started = await a.start("chat", "new", MANUAL)
        assert (await b.pause("chat")).phase is Phase.paused  # through the other replica
        with pytest.raises(ConflictError, match="changed meanwhile"):  # a decision taken on the state before
            await a.store.save(started.model_copy(update={"step": 1}), started, "set_weight", {}, None)
        assert (await a.status("chat")).phase is Phase.paused
        assert (await b.abort("chat")).phase is Phase.rolled_back
        async with asyncio.timeout(5):
            while weights(gateways[0]) != {BASE: 100}:
                await asyncio.sleep(0.01)
        assert [e["event"] for e in await a.history("chat")] == ["started", "set_weight", "paused", "aborted"]
    finally:
        for controller_, gateway in zip((a, b), gateways, strict=True):
            await controller_.stop()
            await gateway.stop()
            await gateway.shared.close()


class StallingStore(RolloutStore):
    """The holder stalls right after saving its first decision: its lease expires and `successor` takes it before
    the holder goes on to set the route's weights."""

    def __init__(self, records: StateRecords, successor: RedisLease) -> None:
        super().__init__(records)
        self.successor = successor

    async def save(self, state, previous, event, detail, token) -> None:
        await super().save(state, previous, event, detail, token)
        if token is not None and self.successor.token is None:
            await self.records.client.delete(self.records.lease)
            assert await self.successor.acquire() is not None


async def test_a_holder_that_stalled_after_saving_a_decision_is_refused_its_route_write_and_stops(
    tmp_path, redis_server, caplog
):
    state = StateSettings(url=redis_server.url, lease_ttl_s=5)
    gateway = await started_gateway(tmp_path / "a.db", "base", "new", state=state)
    store = StallingStore(gateway.router.records, gateway.shared.lease())
    rollouts = RolloutController(gateway, ScriptedObserver(HEALTHY), store, tmp_path, lease=gateway.shared.lease())
    try:
        await gateway.set_route(Route(name="chat", members=[RouteMember(version="base", weight=100)]))
        await rollouts.start("chat", "new", MANUAL.model_copy(update={"interval_s": 0.05}))
        records = gateway.router.records
        table, version = await records.routes(), await records.routes_version()
        stale = await rollouts.lease.acquire()
        await rollouts.pick_up_unfinished(resumed=False)
        async with asyncio.timeout(5):
            await rollouts._loops["chat"]  # ticks once, then stops: it returns instead of ticking on
        assert store.successor.token is not None and store.successor.token > stale
        assert (await rollouts.status("chat")).step == 1, "the decision was saved before the stall"
        assert await records.routes() == table and await records.routes_version() == version
        assert weights(gateway) == {BASE: 90, NEW: 10}, "the stalled holder's weights were refused"
        assert "rollout lease lost while ticking chat" in caplog.text
    finally:
        await rollouts.stop()
        await gateway.stop()
        await gateway.shared.close()


class SwallowingLease(EmbeddedLease):
    """A lease whose renewal swallows a cancel, as redis-py can when one lands while it reads a reply."""

    def __init__(self) -> None:
        self.renewing = asyncio.Event()

    async def acquire(self) -> int | None:
        self.renewing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return self.token


async def test_stop_ends_the_lease_holder_even_when_a_renewal_swallows_the_cancel(gateway, tmp_path):
    lease = SwallowingLease()
    rollouts = RolloutController(
        gateway, ScriptedObserver(HEALTHY), RolloutStore(SqliteRecords(connect(tmp_path / "state.db"))), tmp_path,
        lease=lease, renew_s=0.01,
    )  # fmt: skip
    rollouts.start_holding()
    await lease.renewing.wait()
    stopping = asyncio.ensure_future(rollouts.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    assert done, "stop never returned: the holder renews on after the swallowed cancel"
