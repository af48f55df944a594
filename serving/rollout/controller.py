"""Runs rollouts: ticks the pure policy at each interval and does its I/O (observe, gates, route weights,
state and audit writes) through narrow ports (a `RouteTable`, an `Observer`, a load-test runner). Active
rollouts are resumed from the state file when the server starts; a route under a rollout is changed by it alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.errors import ConflictError, InvalidRequestError, ModelNotFoundError
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

logger = logging.getLogger(__name__)


class RolloutController:
    def __init__(
        self,
        routes: RouteTable,
        observer: Observer,
        store: RolloutStore,
        reports_dir: Path,
        load_test: LoadTestRunner | None = None,
    ) -> None:
        """`load_test` runs the load-test gates (none: a rollout asking for one is refused)."""
        self.routes = routes
        self.reports_dir = reports_dir
        self.load_test = load_test
        self.observer = observer
        self.store = store
        self._loops: dict[str, asyncio.Task[None]] = {}

    def pick_up_unfinished(self) -> None:
        """Pick up every unfinished rollout from the state file (after a restart)."""
        for state in self.store.all():
            if not state.phase.finished:
                self.store.audit(state.route, "resumed", {"phase": state.phase, "step": state.step})
                self._spawn(state.route)

    async def stop(self) -> None:
        for task in self._loops.values():
            task.cancel()
        for task in self._loops.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()

    def status(self, route: str) -> RolloutState:
        state = self.store.get(route)
        if state is None:
            raise ModelNotFoundError(route, sorted(s.route for s in self.store.all()))
        return state

    def active(self, route: str) -> RolloutState:
        state = self.store.get(route)
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
        current = self.store.get(route_name)
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
                self.store.audit(route_name, "pre-rollout gate", asdict(result))
                if not result.passed:
                    raise ConflictError(f"Pre-rollout gate failed: {result.detail}")
            self.store.save(state)
            started = {"primary": primary, "canary": canary, "gates": gates, **state.config.model_dump()}
            self.store.audit(route_name, "started", started)
            await self.tick(route_name)
        self._spawn(route_name)
        return self.store.get(route_name) or state

    async def tick(self, route_name: str) -> Action:
        state = self.active(route_name)
        observation = None
        observed: dict[str, str] = {}
        results: list[GateResult] = []
        if state.phase is Phase.progressing:
            observed = {role: self.routes.registry_version(getattr(state, role)) for role in ("primary", "canary")}
            observation = await self.observer.observe(route_name, **observed, window_s=state.config.interval_s)
            results = [await gate.check(state, "step") for gate in self._step_gates(state)]
        gate_failures = tuple(f"gate: {r.detail}" for r in results if not r.passed)
        new_state, action = decide(state, observation, gate_failures)
        await self._apply(new_state, action)
        self.store.save(new_state)
        detail: dict[str, Any] = {"reason": action.reason, "phase": new_state.phase, "step": new_state.step}
        detail |= {"canary_weight": action.canary_weight, "failed_checks": new_state.failed_checks}
        if observation is not None:
            detail["observation"] = asdict(observation) | {"versions": observed}
        if results:
            detail["gates"] = [asdict(result) for result in results]
        self.store.audit(route_name, action.kind, detail)
        return action

    async def pause(self, route: str) -> RolloutState:
        state = self.active(route)
        if state.phase is not Phase.progressing:
            raise ConflictError(f"Rollout on `{route}` is {state.phase}; only a progressing rollout can pause.")
        return self._transition(state, Phase.paused, "paused")

    async def resume(self, route: str) -> RolloutState:
        """Un-pause the paused rollout on `route`."""
        state = self.active(route)
        if state.phase is not Phase.paused:
            raise ConflictError(f"Rollout on `{route}` is {state.phase}, not paused.")
        return self._transition(state, Phase.progressing, "resumed")

    async def promote(self, route: str) -> RolloutState:
        state = self.active(route)
        await self._apply(state, Action(ActionKind.promote, "manual promote", 100.0))
        return self._transition(state, Phase.promoted, "promoted manually")

    async def abort(self, route: str) -> RolloutState:
        state = self.active(route)
        await self._apply(state, Action(ActionKind.rollback, "aborted", 0.0))
        return self._transition(state, Phase.rolled_back, "aborted")

    async def rollback(self, route_name: str, to: str | None) -> Route:
        """Send all of a route's traffic to `to`, or to the primary of its last rollout."""
        if self.routes.route(route_name) is None:
            raise ModelNotFoundError(route_name, self.routes.route_names())
        last = self.store.get(route_name)
        target = to or (last.primary if last else None)
        if target is None:
            raise ConflictError(f"Route `{route_name}` has no rollout to roll back; name a version with `to`.")
        if last is not None and not last.phase.finished:
            await self.abort(route_name)
        route = await self.routes.set_route(Route(name=route_name, members=[RouteMember(version=target, weight=100)]))
        self.store.audit(route_name, "rollback", {"to": route.primary})
        return route

    async def set_route(self, route: Route) -> Route:
        """Create or change a route, unless a rollout drives it (pause or abort it first)."""
        state = self.store.get(route.name)
        if state is not None and not state.phase.finished:
            raise ConflictError(f"Route `{route.name}` is under a rollout ({state.phase}); pause/abort it first.")
        return await self.routes.set_route(route)

    def history(self, route: str) -> list[dict[str, Any]]:
        self.status(route)
        return self.store.history(route)

    def _load_test_gates(self, state: RolloutState) -> list[Gate]:
        spec = state.gates.get("load_test_gate")
        if not spec or self.load_test is None:
            return []
        return [LoadTestGate(LoadTestGateSpec.model_validate(spec), self.reports_dir, self.load_test)]

    def _step_gates(self, state: RolloutState) -> list[Gate]:
        webhook = state.gates.get("step_webhook")
        return [*self._load_test_gates(state), *([WebhookGate(webhook)] if webhook else [])]

    def _transition(self, state: RolloutState, phase: Phase, event: str) -> RolloutState:
        new_state = state.model_copy(update={"phase": phase})
        self.store.save(new_state)
        self.store.audit(state.route, event, {"phase": phase, "step": state.step})
        return new_state

    async def _apply(self, state: RolloutState, action: Action) -> None:
        if action.canary_weight is None:
            return
        route = self.routes.route(state.route)
        if route is None:
            raise ModelNotFoundError(state.route, self.routes.route_names())
        await self.routes.set_route(route.with_split(state.primary, state.canary, action.canary_weight))
        logger.info(
            "rollout %s: %s -> canary %s at %.0f%%", state.route, action.kind, state.canary, action.canary_weight
        )

    def _spawn(self, route: str) -> None:
        if route not in self._loops or self._loops[route].done():
            self._loops[route] = asyncio.create_task(self._loop(route), name=f"rollout-{route}")

    async def _loop(self, route: str) -> None:
        while True:
            state = self.store.get(route)
            if state is None or state.phase.finished:
                return
            await asyncio.sleep(state.config.interval_s)
            try:
                await self.tick(route)
            except ConflictError:
                return
            except Exception:
                logger.exception("rollout tick on %s failed; retrying next interval", route)
