"""Admin routes: versions (hot load/unload), A/B routes, canary rollouts, fault injection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, HttpUrl, ValidationError

from serving.api.auth import require_admin
from serving.api.endpoints import ERROR_RESPONSES, gateway_of, pipeline_of
from serving.api.shadows import shadows_of
from serving.engine_views import engine_report
from serving.errors import InvalidRequestError, NotFoundError
from serving.faults import FaultProfile
from serving.protocol import EngineStatus, ModelCard, ModelList
from serving.rollout.controller import RolloutController
from serving.rollout.gates import LoadTestGateSpec, ShadowGate
from serving.rollout.policy import RolloutConfig, RolloutState
from serving.router.routes import Route, RouteMember

admin_router = APIRouter(
    prefix="/admin",
    tags=["Admin"],
    responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]},
    dependencies=[Depends(require_admin)],
)


class RouteBody(BaseModel):
    members: list[RouteMember]


class RollbackBody(BaseModel):
    to: str | None = None


class RolloutRequest(BaseModel):
    canary: str
    config: RolloutConfig = RolloutConfig()
    pre_rollout_webhook: HttpUrl | None = None
    step_webhook: HttpUrl | None = None
    load_test_gate: LoadTestGateSpec | None = None
    require_shadow: str | None = Field(
        None,
        description='Thresholds the last shadow run of the canary must meet, e.g. "agreement>=0.9,error_rate<=0.01".',
    )


def rollouts_of(request: Request) -> RolloutController:
    return request.app.state.rollouts


@admin_router.get("/models", response_model=ModelList)
async def admin_models(request: Request) -> ModelList:
    return gateway_of(request).model_list()


@admin_router.get("/engines", response_model=list[EngineStatus])
async def admin_engines(request: Request) -> list[EngineStatus]:
    """Every engine and its state, on-demand ones still starting included."""
    return engine_report(gateway_of(request).engines)


@admin_router.post("/models/{version}/load", response_model=ModelCard)
async def load_version(version: str, request: Request) -> ModelCard:
    """Hot-load a registered adapter version onto its base engine; it is then served as `model: <version>`."""
    gateway = gateway_of(request)
    served = await gateway.load_adapter(version)
    return next(card for card in gateway.model_list().data if card.id == served.name)


@admin_router.post("/models/{version}/unload")
async def unload_version(version: str, request: Request) -> dict[str, str]:
    await gateway_of(request).unload_adapter(version)
    return {"unloaded": version}


@admin_router.get("/routes", response_model=list[Route])
async def list_routes(request: Request) -> list[Route]:
    return list(gateway_of(request).router.routes.values())


@admin_router.put("/routes/{name}", response_model=Route)
async def put_route(name: str, body: RouteBody, request: Request) -> Route:
    """Create a route or change its weights (refused while a rollout drives it). A member that is a registered
    base version nobody serves gets an engine of its own first: the call returns once that engine is warm (or
    fails with 503 `engine_start_failed` after `on_demand.ready_timeout_s`, leaving the route unchanged)."""
    try:
        route = Route(name=name, members=body.members)
    except ValidationError as exc:
        raise InvalidRequestError(f"Invalid route: {exc.errors()[0]['msg']}", param="members") from exc
    return await rollouts_of(request).set_route(route)


@admin_router.delete("/routes/{name}")
async def delete_route(name: str, request: Request) -> dict[str, str]:
    await gateway_of(request).delete_route(name)
    return {"deleted": name}


@admin_router.post("/routes/{name}/rollback", response_model=Route)
async def rollback_route(name: str, body: RollbackBody, request: Request) -> Route:
    return await rollouts_of(request).rollback(name, body.to)


@admin_router.post("/rollouts/{route}", response_model=RolloutState)
async def start_rollout(route: str, body: RolloutRequest, request: Request) -> RolloutState:
    shadow_gate = None
    if body.require_shadow is not None:
        last = shadows_of(request.app).last_result(route)
        shadow_gate = ShadowGate(body.require_shadow, last["run"] if last else None)
    return await rollouts_of(request).start(
        route,
        body.canary,
        body.config,
        pre_rollout_webhook=str(body.pre_rollout_webhook) if body.pre_rollout_webhook else None,
        step_webhook=str(body.step_webhook) if body.step_webhook else None,
        load_test_gate=body.load_test_gate,
        shadow_gate=shadow_gate,
    )


@admin_router.get("/rollouts/{route}", response_model=RolloutState)
async def rollout_status(route: str, request: Request) -> RolloutState:
    return await rollouts_of(request).status(route)


@admin_router.get("/rollouts/{route}/history")
async def rollout_history(route: str, request: Request) -> list[dict[str, Any]]:
    return await rollouts_of(request).history(route)


@admin_router.post("/rollouts/{route}/{operation}", response_model=RolloutState)
async def operate_rollout(route: str, operation: str, request: Request) -> RolloutState:
    controller = rollouts_of(request)
    operations = {
        "pause": controller.pause,
        "resume": controller.resume,
        "promote": controller.promote,
        "abort": controller.abort,
    }
    if operation not in operations:
        raise NotFoundError(f"Unknown rollout operation `{operation}`; use one of {', '.join(operations)}.")
    return await operations[operation](route)


@admin_router.put("/faults/{version}", response_model=FaultProfile)
async def set_fault(version: str, profile: FaultProfile, request: Request) -> FaultProfile:
    """Make a version misbehave on purpose (only when `faults.enabled`)."""
    if not request.app.state.settings.faults.enabled:
        raise NotFoundError("Fault injection is off (faults.enabled).")
    pipeline_of(request).faults.set(gateway_of(request).versions.resolve(version).name, profile)
    return profile


@admin_router.delete("/faults/{version}")
async def clear_fault(version: str, request: Request) -> dict[str, str]:
    pipeline_of(request).faults.set(gateway_of(request).versions.resolve(version).name, None)
    return {"cleared": version}
