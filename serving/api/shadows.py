"""Admin routes for shadow runs: start one on a route, see it, stop it (which writes its report)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request

from serving.api.auth import require_admin
from serving.api.endpoints import ERROR_RESPONSES, gateway_of
from serving.errors import InvalidRequestError, ModelNotFoundError
from serving.gateway import Gateway
from serving.pipeline.truncation import tokenizer_for
from serving.protocol import ShadowStartRequest, ShadowStatus
from serving.shadow.compare import Tokenize, characters
from serving.shadow.session import Shadower

logger = logging.getLogger(__name__)

shadow_router = APIRouter(
    prefix="/admin/shadows",
    tags=["Admin"],
    responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]},
    dependencies=[Depends(require_admin)],
)


def primary_tokenizers(gateway: Gateway) -> Callable[[str], Tokenize]:
    """Agreement is measured in the primary's tokens (its base's tokenizer: an adapter shares it), loaded once
    per primary; in characters when it cannot be loaded (a remote engine whose model is not on this machine)."""
    loaded: dict[str, Tokenize] = {}

    def tokenize_for(primary: str) -> Tokenize:
        if primary not in loaded:
            try:
                served = gateway.versions.resolve(primary)
                base = gateway.versions.resolve(served.parent) if served.parent else served
                loaded[primary] = functools.partial(_encode_batch, tokenizer_for(base.model.path))
            except Exception as exc:  # any loading failure leaves the comparison possible, in a coarser unit
                logger.warning("shadow: no tokenizer for %s (%r): agreement is measured over characters", primary, exc)
                loaded[primary] = characters
        return loaded[primary]

    return tokenize_for


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The fast tokenizer's own batch call (what `tokenizer(texts)` ends in, without its Python around it)."""
    return [encoding.ids for encoding in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]


def shadows_of(app: FastAPI) -> Shadower:
    """The server's Shadower (made with its request pipeline, which mirrors the requests)."""
    return app.state.shadows


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
    if shadows.tokenize is not None:  # loaded now, in a thread: not by the first comparison
        await asyncio.to_thread(shadows.tokenize, table.primary)
    run = shadows.start(route, table.primary, served.name, body.percent, body.max_in_flight, body.duration_s)
    return run.status()


@shadow_router.get("/{route}", response_model=ShadowStatus)
async def shadow_status(route: str, request: Request) -> dict[str, Any]:
    """The run in progress, else the route's last finished run."""
    return shadows_of(request.app).status(route)


@shadow_router.delete("/{route}", response_model=ShadowStatus)
async def stop_shadow(route: str, request: Request) -> dict[str, Any]:
    return (await shadows_of(request.app).stop(route))["run"]
