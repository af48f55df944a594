"""Route functions stay thin: validate (FastAPI + serving.protocol), then hand over to serving.api.completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import Match

from serving.api.auth import authenticate
from serving.api.completion_route import CompletionRoute
from serving.api.completions import serve_completion
from serving.backends.base import Endpoint
from serving.engine_views import engine_metrics, engine_states
from serving.errors import MethodNotAllowedError, NotFoundError
from serving.gateway import Gateway
from serving.pipeline.dispatch import Pipeline
from serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    ErrorResponse,
    ModelList,
    ModelRequest,
    ResponsesRequest,
    TokenizeRequest,
)

ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request (the `param` names the field)",
        401: "Missing or invalid API key",
        403: "The key may not use this route or model",
        404: "Unknown model, or an endpoint its engine does not serve",
        413: "Request body too large",
        503: "Engine starting, warming up or down (see Retry-After)",
    }.items()
}

completion_router = APIRouter(prefix="/v1", tags=["OpenAI"], responses=ERROR_RESPONSES, route_class=CompletionRoute)
engine_router = APIRouter(tags=["vLLM"], responses=ERROR_RESPONSES, route_class=CompletionRoute)
"""vLLM's own routes outside `/v1`, served the same way."""
openai_router = APIRouter(
    prefix="/v1", tags=["OpenAI"], responses=ERROR_RESPONSES, dependencies=[Depends(authenticate)]
)
ops_router = APIRouter(tags=["Operations"])


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def pipeline_of(request: Request) -> Pipeline:
    return request.app.state.pipeline


async def _serve(endpoint: Endpoint, body: ModelRequest, request: Request) -> Response:
    """Every engine-backed route takes the one request pipeline (auth, limits, version, metrics, relay)."""
    return await serve_completion(pipeline_of(request), endpoint, body, request)


@openai_router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return gateway_of(request).model_list()


@completion_router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _serve("chat/completions", body, request)


@completion_router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _serve("completions", body, request)


@completion_router.post("/responses")
async def responses(body: ResponsesRequest, request: Request) -> Response:
    """OpenAI's Responses API, streaming (named events) and not: vLLM's implementation, servekit's duties."""
    return await _serve("responses", body, request)


@completion_router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Served by a version whose engine runs an embedding model; others answer 404 `endpoint_not_served`."""
    return await _serve("embeddings", body, request)


@engine_router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    return await _serve("tokenize", body, request)


@engine_router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> Response:
    return await _serve("detokenize", body, request)


@ops_router.get("/health")
async def health() -> dict[str, str]:
    """The gateway process is alive (engines may still be starting)."""
    return {"status": "ok"}


@ops_router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 only when every engine is up and passed its warm-up generation."""
    gateway = gateway_of(request)
    is_ready = gateway.ready
    body = {
        "status": "ready" if is_ready else "not_ready",
        "engines": engine_states(gateway.engines),
        "breakers": pipeline_of(request).breakers.states(),
        "degradation": pipeline_of(request).degrader.status(),
    }
    headers = {} if is_ready else {"Retry-After": str(request.app.state.settings.warmup.retry_after_s)}
    return JSONResponse(body, status_code=200 if is_ready else 503, headers=headers)


@ops_router.get("/metrics")
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    for version, state in pipeline_of(request).breakers.states().items():
        gateway.metrics.breaker_open.labels(version).set(0 if state == "closed" else 1)
    return Response(gateway.metrics.render(await engine_metrics(gateway.engines)), media_type=CONTENT_TYPE_LATEST)


fallback_router = APIRouter(include_in_schema=False)


@fallback_router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def unknown_route(path: str, request: Request) -> None:
    """OpenAI-shaped 404/405 for any path the app does not serve (the host's own would be plain text).
    Included last."""
    this_route = request.scope.get("route")
    for route in request.app.router.routes:
        if route is not this_route and route.matches(request.scope)[0] is Match.PARTIAL:
            raise MethodNotAllowedError(f"Method {request.method} not allowed on {request.url.path}")
    raise NotFoundError(f"No route {request.method} /{path}")
