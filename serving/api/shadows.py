"""Admin routes for shadow runs: start one on a route, see it, stop it (which writes its report)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request

from serving.api.auth import require_admin
from serving.api.endpoints import ERROR_RESPONSES, gateway_of
from serving.errors import InvalidRequestError, ModelNotFoundError
from serving.protocol import ShadowStartRequest, ShadowStatus
from serving.shadow.session import Shadower

shadow_router = APIRouter(
    prefix="/admin/shadows",
    tags=["Admin"],
    responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]},
    dependencies=[Depends(require_admin)],
)


def shadows_of(app: FastAPI) -> Shadower:
    """The server's Shadower: `app.state.shadows` when the host made one, else made now on the gateway's metrics
    registry (what the request pipeline calls too)."""
    shadower: Shadower | None = getattr(app.state, "shadows", None)
    if shadower is None:
        settings = app.state.settings
        shadower = Shadower(settings.shadow, settings.shadows_dir, app.state.gateway.metrics.registry)
        app.state.shadows = shadower
    return shadower


@shadow_router.get("", response_model=list[ShadowStatus])
async def list_shadows(request: Request) -> list[dict[str, Any]]:
    return shadows_of(request.app).all_status()


@shadow_router.post("/{route}", response_model=ShadowStatus)
async def start_shadow(route: str, body: ShadowStartRequest, request: Request) -> dict[str, Any]:
    """Validated before anything is loaded: the route and the candidate exist, the candidate is not the primary.
    A registered adapter not served yet is loaded (a base version gets an engine) before copies are sent."""
    gateway = gateway_of(request)
    table = gateway.route(route)
    if table is None:
        raise ModelNotFoundError(route, gateway.route_names())
    if gateway.identify(body.candidate) == table.primary:
        raise InvalidRequestError(f"`{body.candidate}` is the primary of `{route}`.", param="candidate")
    shadows = shadows_of(request.app)
    shadows.check_free(route)
    served = await gateway.prepare(body.candidate)
    run = shadows.start(route, table.primary, served.name, body.percent, body.max_in_flight, body.duration_s)
    return run.status()


@shadow_router.get("/{route}", response_model=ShadowStatus)
async def shadow_status(route: str, request: Request) -> dict[str, Any]:
    """The run in progress, else the route's last finished run."""
    return shadows_of(request.app).status(route)


@shadow_router.delete("/{route}", response_model=ShadowStatus)
async def stop_shadow(route: str, request: Request) -> dict[str, Any]:
    return (await shadows_of(request.app).stop(route))["run"]
