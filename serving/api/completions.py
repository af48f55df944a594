"""HTTP in, HTTP out for every engine-backed route: a request becomes a pipeline `Call`, its `Answer` a
response. The request's life itself is `serving.pipeline.dispatch`."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from serving.api.errors import error_response
from serving.api.event_stream import EventStreamResponse
from serving.backends.base import Endpoint
from serving.pipeline.dispatch import VERSION_HEADER, Answer, Call, Pipeline
from serving.pipeline.principal import ANONYMOUS_ID, Principal
from serving.protocol import ModelRequest

USER_HEADER = "x-servekit-user"


def sticky_key(request: Request, principal: Principal, body: ModelRequest) -> str | None:
    """Who the request is for, so a route keeps sending them to the same version: the `user` field, the
    `x-servekit-user` header, the API key, else nobody (a weighted random choice)."""
    if body.user or (user := request.headers.get(USER_HEADER)):
        return body.user or user
    return None if principal.key_id == ANONYMOUS_ID else principal.key_id


async def serve_completion(pipeline: Pipeline, endpoint: Endpoint, body: ModelRequest, request: Request) -> Response:
    principal: Principal = request.state.principal
    call = Call(
        endpoint, body, principal, request.state.request_id,
        sticky_key=sticky_key(request, principal, body), pinned=request.headers.get(VERSION_HEADER),
    )  # fmt: skip
    return response_for(await pipeline.serve(call))


def response_for(answer: Answer) -> Response:
    if answer.error is not None:
        return error_response(answer.error, answer.headers)
    if answer.stream is not None:
        return EventStreamResponse(answer.stream, headers=answer.headers, on_close=answer.close)
    return JSONResponse(answer.body, headers=answer.headers)
