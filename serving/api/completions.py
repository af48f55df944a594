"""Serving one completion: pick the version, forward to its engine, relay the answer, record the stats.

Streams are relayed chunk by chunk as they arrive (no buffering), as the engine's bytes: only the final usage
chunk (which servekit always requests, and drops again when the client did not ask for it) is parsed; tokens
are timed by a byte test, not a JSON parse.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers

from serving.api.errors import error_response
from serving.backends.base import ChunkStream, Endpoint
from serving.errors import ServekitError
from serving.gateway import Gateway
from serving.metrics.stats import RequestStats
from serving.protocol import SamplingFields

VERSION_HEADER = "x-servekit-version"
USER_HEADER = "x-servekit-user"
CLIENT_CLOSED_REQUEST = 499


def sticky_key(headers: Headers, body: SamplingFields) -> str | None:
    """Who the request is for, so a route keeps sending them to the same version."""
    authorization = headers.get("authorization", "")
    return body.user or headers.get(USER_HEADER) or authorization.removeprefix("Bearer ").strip() or None


async def serve_completion(gateway: Gateway, endpoint: Endpoint, body: SamplingFields, headers: Headers) -> Response:
    served = gateway.serving_version(body.model, sticky_key(headers, body), headers.get(VERSION_HEADER))
    response_headers = {VERSION_HEADER: served.version}
    stats = RequestStats(route=body.model, model=served.model.name, version=served.version)
    if not served.supervisor.ready:
        return _failed(gateway, stats, served.supervisor.unavailable(), response_headers)
    fault = gateway.faults.get(served.name)
    backend = served.supervisor.backend
    payload = body.engine_payload(served.engine_model)
    in_flight = gateway.metrics.in_flight.labels(stats.model, stats.version)
    in_flight.inc()
    try:
        if fault is not None:
            await fault.apply(served.name)
        if body.stream:
            stream = await backend.open_stream(endpoint, payload)
        else:
            result = await backend.complete(endpoint, payload)
    except ServekitError as error:
        in_flight.dec()
        return _failed(gateway, stats, error, response_headers)
    except asyncio.CancelledError:
        in_flight.dec()
        raise
    if body.stream:
        relay = _relay(stream, stats, gateway, keep_usage=body.wants_usage_in_stream)
        return StreamingResponse(relay, media_type="text/event-stream", headers=response_headers)
    in_flight.dec()
    _count_usage(stats, result.get("usage"))
    stats.finish(200)
    gateway.metrics.record(stats)
    return JSONResponse(result, headers=response_headers)


def _failed(gateway: Gateway, stats: RequestStats, error: ServekitError, headers: dict[str, str]) -> Response:
    stats.finish(error.status_code)
    gateway.metrics.record(stats)
    return error_response(error, headers)


def _count_usage(stats: RequestStats, usage: dict[str, Any] | None) -> None:
    if usage:
        stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        stats.completion_tokens = int(usage.get("completion_tokens") or 0)


USAGE_CHUNK_MARK = b'"choices":[]'
EMPTY_CONTENT_MARKS = (b'"content":""', b'"text":""')
CONTENT_MARKS = (b'"content":"', b'"text":"')


def _has_token(data: bytes) -> bool:
    """A chunk carries generated text (vLLM's compact JSON: no spaces after colons)."""
    return any(mark in data for mark in CONTENT_MARKS) and not any(mark in data for mark in EMPTY_CONTENT_MARKS)


async def _relay(stream: ChunkStream, stats: RequestStats, gateway: Gateway, keep_usage: bool) -> AsyncIterator[bytes]:
    status = CLIENT_CLOSED_REQUEST
    try:
        async for data in stream:
            if USAGE_CHUNK_MARK in data:
                _count_usage(stats, json.loads(data).get("usage"))
                if not keep_usage:
                    continue
            elif _has_token(data):
                stats.token_arrived()
            yield b"data: " + data + b"\n\n"
        status = 200
        yield b"data: [DONE]\n\n"
    except ServekitError as error:
        status = error.status_code
        yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        await stream.aclose()
        gateway.metrics.in_flight.labels(stats.model, stats.version).dec()
        stats.finish(status)
        gateway.metrics.record(stats)
