"""Runs rollouts: ticks the pure policy at each interval and does its I/O (observe, gates, route weights,
state and audit writes) through narrow ports (a `RouteTable`, an `Observer`, a load-test runner). A route under
a rollout is changed by it alone.

Several replicas (`state.url`): rollouts tick on exactly one of them, the holder of the lease
(`serving.state.lease`). `hold_lease` is every replica's background task: it takes or renews the lease every
`renew_s`; on taking it, the replica picks up every unfinished rollout from the shared state; while holding it,
it also picks up rollouts that another replica started. Its ticks carry the lease token, their route weights too,
so once another replica holds the lease they are refused (LeaseLostError) and this replica's loops stop at once.

Admin commands (start, pause, resume, promote, abort, rollback) are carried out by whichever replica receives
them, holder or not: their writes are compare-and-set on the rollout's stored state (`RolloutStore.save`), so a
command and the holder's tick on the same state cannot both be recorded; the loser gets 409 (a command) or
re-reads at its next interval (a tick). That is simpler than forwarding to the holder, which would need every
replica's address, and it keeps working while the lease changes hands. Each state change is stored together with
its audit entry, so the audit has neither a gap nor a duplicate decision across a handover. The state is saved
before the route is changed; a replica that dies between the two leaves the route behind its state, and
whoever picks the rollout up sets the route to the state's weight first.

One process without Redis holds an `EmbeddedLease`: it always holds, and behaves as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.errors import ConflictError, InvalidRequestError, LeaseLostError, ModelNotFoundError, StateUnavailableError
from serving.rollout.gates import (
    Gate,
    GateResult,
    LoadTestGate,
    LoadTestGateSpec,
    LoadTestRunner,
    ShadowGate,
    WebhookGate,
)
from serving.rollout.observation import Observer
from serving.rollout.policy import Action, ActionKind, Phase, RolloutConfig, RolloutState, decide
from serving.rollout.route_table import RouteTable
from serving.rollout.store import RolloutStore
from serving.router.routes import Route, RouteMember
from serving.state.lease import EmbeddedLease, Lease

logger = logging.getLogger(__name__)


class RolloutController:
    def __init__(
        self,
        routes: RouteTable,
        observer: Observer,
        store: RolloutStore,
        reports_dir: Path,
        load_test: LoadTestRunner | None = None,
        lease: Lease | None = None,
        renew_s: float = 1.0,
    ) -> None:
        """`load_test` runs the load-test gates (none: a rollout asking for one is refused). `lease`: which replica
        ticks (None: this one alone, `EmbeddedLease`); `renew_s`: how often `hold_lease` renews it and looks for
        rollouts started elsewhere (a third of the lease's expiry)."""
        self.routes = routes
        self.reports_dir = reports_dir
        self.load_test = load_test
        self.observer = observer
        self.store = store
        self.lease: Lease = lease or EmbeddedLease()
        self.renew_s = renew_s
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._holder: asyncio.Task[None] | None = None
        self._stopping = False

    def start_holding(self) -> None:
        """Run `hold_lease` in the background (on startup; `stop` ends it)."""
        self._holder = asyncio.create_task(self.hold_lease(), name="rollout-lease")

    async def hold_lease(self) -> None:
        """Take or renew the lease every `renew_s`; pick up unfinished rollouts while holding it, stop ticking
        while not. `resumed` is audited once per lease term: a renewal lost to a Redis blip and taken again with
        the same token picks the rollouts up silently."""
        holding, term = False, None
        while not self._stopping:
            token = await self.lease.acquire()
            if token is None and holding:
                logger.warning("rollout lease lost: this replica stops ticking rollouts")
                await self._stop_loops()
                holding = False
            try:
                if token is not None:
                    await self.pick_up_unfinished(resumed=not holding and token != term)
                    holding, term = True, token
            except StateUnavailableError:
                pass
            except LeaseLostError:
                await self._stop_loops()
                holding = False
            await asyncio.sleep(self.renew_s)

    async def pick_up_unfinished(self, resumed: bool = True) -> None:
        """Tick every unfinished rollout not ticking here yet: after a restart or on taking the lease (audited as
        `resumed`), or one started through another replica (`resumed=False`: its start is audited already)."""
        for state in await self.store.all():
            if not state.phase.finished and not self._running(state.route):
                if resumed:
                    detail = {"phase": state.phase, "step": state.step}
                    await self.store.audit(state.route, "resumed", detail, self.lease.token)
                self._spawn(state.route)

    async def stop(self) -> None:
        """On shutdown: stop ticking and give the lease up, so another replica need not wait for its expiry. The
        flag ends `hold_lease` also when redis-py swallows the cancel (one landing while a reply is read)."""
        self._stopping = True
        if self._holder is not None:
            self._holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._holder
            self._holder = None
        await self._stop_loops()
        await self.lease.release()

    async def _stop_loops(self) -> None:
        loops = [task for task in self._loops.values() if task is not asyncio.current_task()]
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()

    async def status(self, route: str) -> RolloutState:
        state = await self.store.get(route)
        if state is None:
            raise ModelNotFoundError(route, sorted(s.route for s in await self.store.all()))
        return state

    async def active(self, route: str) -> RolloutState:
        state = await self.store.get(route)
        if state is None or state.phase.finished:
            raise ConflictError(f"No rollout in progress on route `{route}`.")
        return state

    async def start(
        self,
        route_name: str,
        canary_name: str,
        config: RolloutConfig,
        *,
        pre_rollout_webhook: str | None = None,
        step_webhook: str | None = None,
        load_test_gate: LoadTestGateSpec | None = None,
        shadow_gate: ShadowGate | None = None,
    ) -> RolloutState:
        """`shadow_gate` judges the route's last shadow run before anything else (its verdict is audited)."""
        route = self.routes.route(route_name)
        if route is None:
            raise ModelNotFoundError(route_name, self.routes.route_names())
        current = await self.store.get(route_name)
        if current is not None and not current.phase.finished:
            raise ConflictError(f"Route `{route_name}` already has a rollout ({current.phase}); abort it first.")
        if load_test_gate is not None and self.load_test is None:
            raise InvalidRequestError("This server runs no load-test gates.", param="load_test_gate")
        primary = route.primary  # route members are stored by served name, the identity a rollout keeps too
        if self.routes.identify(canary_name) == primary:
            raise InvalidRequestError(f"`{canary_name}` is already the primary of `{route_name}`.", param="canary")
        # A canary base version gets its engine (warm) before the rollout starts; it is retired again when a
        # pre-rollout gate refuses, and later when a promotion or rollback leaves no route using it.
        async with self.routes.holding([canary_name]):
            served = await self.routes.prepare(canary_name)
            canary = served.name
            if served.version == self.routes.registry_version(primary):
                raise InvalidRequestError(
                    f"`{canary}` and the primary `{primary}` serve the same registry version ({served.version}); "
                    "their metrics carry one `version` label, so a rollout could not tell them apart.",
                    param="canary",
                )
            self.routes.expect_traffic(canary, route_name)  # at zero while the gates run: likely scraped so
            gates: dict[str, Any] = {"step_webhook": step_webhook} if step_webhook else {}
            if load_test_gate is not None:
                gates["load_test_gate"] = load_test_gate.model_dump(mode="json")
            if shadow_gate is not None:
                gates["require_shadow"] = ",".join(map(str, shadow_gate.requirements))
            state = RolloutState(route=route_name, primary=primary, canary=canary, config=config, gates=gates)
            pre_gates: list[Gate] = [shadow_gate] if shadow_gate is not None else []
            pre_gates += self._load_test_gates(state)
            if pre_rollout_webhook is not None:
                pre_gates.append(WebhookGate(pre_rollout_webhook))
            for gate in pre_gates:
                result = await gate.check(state, "pre-rollout")
                await self.store.audit(route_name, "pre-rollout gate", asdict(result), None)
                if not result.passed:
                    raise ConflictError(f"Pre-rollout gate failed: {result.detail}")
            started = {"primary": primary, "canary": canary, "gates": gates, **state.config.model_dump()}
            await self.store.save(state, current, "started", started, None)
            await self.tick(route_name, None)
        if self.lease.token is not None:
            self._spawn(route_name)
        return await self.store.get(route_name) or state

    async def tick(self, route_name: str, token: int | None = None) -> Action:
        """One decision on the route's rollout; `token`: the lease token when the controller's loop decides."""
        state = await self.active(route_name)
        observation = None
        observed: dict[str, str] = {}
        results: list[GateResult] = []
        if state.phase is Phase.progressing:
            observed = {role: self.routes.registry_version(getattr(state, role)) for role in ("primary", "canary")}
            observation = await self.observer.observe(route_name, **observed, window_s=state.config.interval_s)
            results = [await gate.check(state, "step") for gate in self._step_gates(state)]
        gate_failures = tuple(f"gate: {r.detail}" for r in results if not r.passed)
        new_state, action = decide(state, observation, gate_failures)
        detail: dict[str, Any] = {"reason": action.reason, "phase": new_state.phase, "step": new_state.step}
        detail |= {"canary_weight": action.canary_weight, "failed_checks": new_state.failed_checks}
        if observation is not None:
            detail["observation"] = asdict(observation) | {"versions": observed}
        if results:
            detail["gates"] = [asdict(result) for result in results]
        await self.store.save(new_state, state, action.kind, detail, token)
        await self._apply(new_state, action, token)
        return action

    async def pause(self, route: str) -> RolloutState:
        state = await self.active(route)
        if state.phase is not Phase.progressing:
            raise ConflictError(f"Rollout on `{route}` is {state.phase}; only a progressing rollout can pause.")
        return await self._transition(state, Phase.paused, "paused")

    async def resume(self, route: str) -> RolloutState:
        """Un-pause the paused rollout on `route`."""
        state = await self.active(route)
        if state.phase is not Phase.paused:
            raise ConflictError(f"Rollout on `{route}` is {state.phase}, not paused.")
        return await self._transition(state, Phase.progressing, "resumed")

    async def promote(self, route: str) -> RolloutState:
        state = await self.active(route)
        new_state = await self._transition(state, Phase.promoted, "promoted manually")
        await self._apply(state, Action(ActionKind.promote, "manual promote", 100.0))
        return new_state

    async def abort(self, route: str) -> RolloutState:
        state = await self.active(route)
        new_state = await self._transition(state, Phase.rolled_back, "aborted")
        await self._apply(state, Action(ActionKind.rollback, "aborted", 0.0))
        return new_state

    async def rollback(self, route_name: str, to: str | None) -> Route:
        """Send all of a route's traffic to `to`, or to the primary of its last rollout."""
        if self.routes.route(route_name) is None:
            raise ModelNotFoundError(route_name, self.routes.route_names())
        last = await self.store.get(route_name)
        target = to or (last.primary if last else None)
        if target is None:
            raise ConflictError(f"Route `{route_name}` has no rollout to roll back; name a version with `to`.")
        if last is not None and not last.phase.finished:
            await self.abort(route_name)
        route = await self.routes.set_route(Route(name=route_name, members=[RouteMember(version=target, weight=100)]))
        await self.store.audit(route_name, "rollback", {"to": route.primary}, None)
        return route

    async def set_route(self, route: Route) -> Route:
        """Create or change a route, unless a rollout drives it (pause or abort it first)."""
        state = await self.store.get(route.name)
        if state is not None and not state.phase.finished:
            raise ConflictError(f"Route `{route.name}` is under a rollout ({state.phase}); pause/abort it first.")
        return await self.routes.set_route(route)

    async def history(self, route: str) -> list[dict[str, Any]]:
        await self.status(route)
        return await self.store.history(route)

    def _load_test_gates(self, state: RolloutState) -> list[Gate]:
        spec = state.gates.get("load_test_gate")
        if not spec or self.load_test is None:
            return []
        return [LoadTestGate(LoadTestGateSpec.model_validate(spec), self.reports_dir, self.load_test)]

    def _step_gates(self, state: RolloutState) -> list[Gate]:
        webhook = state.gates.get("step_webhook")
        return [*self._load_test_gates(state), *([WebhookGate(webhook)] if webhook else [])]

    async def _transition(self, state: RolloutState, phase: Phase, event: str) -> RolloutState:
        new_state = state.model_copy(update={"phase": phase})
        await self.store.save(new_state, state, event, {"phase": phase, "step": state.step}, None)
        return new_state

    async def _apply(self, state: RolloutState, action: Action, token: int | None = None) -> None:
        """`token`: the lease token of the controller's own decision, fencing the route write like the state's."""
        if action.canary_weight is None:
            return
        route = self.routes.route(state.route)
        if route is None:
            raise ModelNotFoundError(state.route, self.routes.route_names())
        await self.routes.set_route(route.with_split(state.primary, state.canary, action.canary_weight), token)
        logger.info(
            "rollout %s: %s -> canary %s at %.0f%%", state.route, action.kind, state.canary, action.canary_weight
        )

    def _running(self, route: str) -> bool:
        return route in self._loops and not self._loops[route].done()

    def _spawn(self, route: str) -> None:
        if not self._running(route):
            self._loops[route] = asyncio.create_task(self._loop(route), name=f"rollout-{route}")

    async def _loop(self, route: str) -> None:
        """Tick at each interval while this replica holds the lease. First the route is brought to the state's
        weight (a replica that died between saving a decision and applying it left it behind)."""
        aligned = False
        while True:
            try:
                state = await self.store.get(route)
                if state is None or state.phase.finished:
                    return
                if self.lease.token is None:
                    return
                if not aligned:
                    aligned = True
                    await self._align(state, self.lease.token)
                await asyncio.sleep(state.config.interval_s)
                if self.lease.token is None:
                    return
                await self.tick(route, self.lease.token)
            except LeaseLostError:
                logger.warning("rollout lease lost while ticking %s: this replica stops ticking rollouts", route)
                for name, task in self._loops.items():
                    if name != route:
                        task.cancel()
                return
            except ConflictError:
                continue  # the state changed meanwhile (a command): read it again
            except StateUnavailableError:
                await asyncio.sleep(self.renew_s)
            except Exception:
                logger.exception("rollout tick on %s failed; retrying next interval", route)

    async def _align(self, state: RolloutState, token: int) -> None:
        if state.phase in (Phase.progressing, Phase.paused):
            route = self.routes.route(state.route)
            if route is not None and route.weight_of(state.canary) != state.canary_weight:
                await self._apply(state, Action(ActionKind.set_weight, "resumed: route set to the state's weight",
                                                state.canary_weight), token)  # fmt: skip
