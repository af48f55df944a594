"""Serving one completion: pick the version, forward to its engine, relay the answer, record the stats.

The same path serves what vLLM's server serves beside completions (the Responses API, embeddings, tokenize,
detokenize): one version resolution, admission, error shape and set of metrics for all of them.

Streams are relayed chunk by chunk as they arrive (no buffering), as the engine's bytes: only the final usage
chunk (which servekit always requests, and drops again when the client did not ask for it) is parsed; tokens
are timed by a byte test, not a JSON parse. Responses API streams are named events with usage in their last one
(`response.completed`) and no `[DONE]`; each is parsed for its name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from serving.api.auth import ANONYMOUS_ID, Principal
from serving.api.errors import error_response
from serving.api.event_stream import EventStreamResponse
from serving.api.input_limits import check_input_limits
from serving.api.ratelimit import Admission, RateLimiter
from serving.api.truncation import tokenizer_for, truncate_left
from serving.backends.base import ChunkStream, Endpoint
from serving.errors import OverloadedError, ServekitError
from serving.gateway import Gateway, ServedVersion
from serving.metrics.stats import RequestStats
from serving.protocol import ChatCompletionRequest, ModelRequest
from serving.settings import LimitsSettings

VERSION_HEADER = "x-servekit-version"
DEFAULT_OUTPUT_ESTIMATE = 256
"""Tokens a request without max_tokens is charged up front (settled against its real usage afterwards)."""
USER_HEADER = "x-servekit-user"
FALLBACK_HEADER = "x-servekit-fallback"
TRUNCATED_HEADER = "x-servekit-truncated-messages"
CLIENT_CLOSED_REQUEST = 499


def sticky_key(request: Request, principal: Principal, body: ModelRequest) -> str | None:
    """Who the request is for, so a route keeps sending them to the same version: the `user` field, the
    `x-servekit-user` header, the API key, else nobody (a weighted random choice)."""
    if body.user or (user := request.headers.get(USER_HEADER)):
        return body.user or user
    return None if principal.key_id == ANONYMOUS_ID else principal.key_id


async def serve_completion(
    gateway: Gateway, endpoint: Endpoint, body: ModelRequest, request: Request, principal: Principal
) -> Response:
    principal.check_model(body.model)
    limits = request.app.state.settings.limits
    check_input_limits(body, limits)
    limiter: RateLimiter = request.app.state.rate_limiter
    served, fallback = gateway.serving_version(
        body.model, sticky_key(request, principal, body), request.headers.get(VERSION_HEADER)
    )
    dropped = await _apply_prompt_policy(gateway, served, body, limits)
    admission = limiter.admit(
        principal.key_id, lambda: body.prompt_tokens_estimate() + (body.output_budget or DEFAULT_OUTPUT_ESTIMATE)
    )
    headers = {VERSION_HEADER: served.version, **(admission.headers if admission else {})}
    if fallback:
        headers[FALLBACK_HEADER] = "1"
    if dropped:
        headers[TRUNCATED_HEADER] = str(dropped)
    stats = RequestStats(
        route=body.model, request_id=request.state.request_id, key_id=principal.key_id, stream=body.stream,
        model=served.model.name, version=served.version,
    )  # fmt: skip
    try:
        if not served.supervisor.ready:
            raise served.supervisor.unavailable()
        engine = gateway.admit(served)
    except ServekitError as error:
        return _failed(gateway, served, stats, error, headers, (limiter, admission))
    try:
        if (fault := gateway.faults.get(served.name)) is not None:
            await fault.apply(served.name)
        backend, payload = served.supervisor.backend, body.engine_payload(served.engine_model)
        if body.stream:
            stream = await backend.open_stream(endpoint, payload)
        else:
            result = await backend.complete(endpoint, payload)
    except ServekitError as error:
        gateway.release(served, engine)
        return _failed(gateway, served, stats, error, headers, (limiter, admission))
    except asyncio.CancelledError:
        gateway.release(served, engine)
        gateway.breakers.record(served.name, None)
        limiter.settle(admission, 0)
        raise
    if body.stream:
        events: CompletionEvents | ResponseEvents = (
            ResponseEvents(stats) if endpoint == "responses" else CompletionEvents(stats, body.wants_usage_in_stream)
        )
        relay = _relay(stream, events, gateway, release=(served, engine), settle=(limiter, admission))
        return EventStreamResponse(relay, headers=headers)
    gateway.release(served, engine)
    _count_usage(stats, result.get("usage"))
    _finish(gateway, served, stats, (limiter, admission), 200)
    return JSONResponse(result, headers=headers)


async def _apply_prompt_policy(
    gateway: Gateway, served: ServedVersion, body: ModelRequest, limits: LimitsSettings
) -> int:
    """`truncate_left` for this route or version: fit the chat history into the context; returns how many
    messages were dropped. `error` (the default) leaves the check to the engine."""
    policy = limits.prompt_policies.get(body.model, limits.prompt_policy)
    if policy != "truncate_left" or not isinstance(body, ChatCompletionRequest):
        return 0
    tokenizer = tokenizer_for(gateway.resolve(served.parent).model.path if served.parent else served.model.path)
    body.messages, dropped = await asyncio.to_thread(
        truncate_left, tokenizer, body.messages, served.max_model_len, body.output_budget or 1
    )
    return dropped


def engine_outcome(status: int, error: ServekitError | None = None) -> bool | None:
    """What a finished request says about its engine, for the circuit breaker: a 5xx is the engine's failure,
    a shed request (the gateway's own limit) or a client that left says nothing."""
    if isinstance(error, OverloadedError) or status == CLIENT_CLOSED_REQUEST:
        return None
    return status < 500


def _failed(
    gateway: Gateway,
    served: ServedVersion,
    stats: RequestStats,
    error: ServekitError,
    headers: dict[str, str],
    settle: tuple[RateLimiter, Admission | None],
) -> Response:
    _finish(gateway, served, stats, settle, error.status_code, error)  # no usage: the estimate comes back
    return error_response(error, headers)


def _finish(
    gateway: Gateway,
    served: ServedVersion,
    stats: RequestStats,
    settle: tuple[RateLimiter, Admission | None],
    status: int,
    error: ServekitError | None = None,
) -> None:
    """What every finished request updates: its rate-limit charge (settled against real usage), its version's
    circuit breaker, the metrics and the access log."""
    limiter, admission = settle
    limiter.settle(admission, stats.prompt_tokens + stats.completion_tokens)
    gateway.breakers.record(served.name, engine_outcome(status, error))
    stats.finish(status)
    gateway.record(stats)


def _count_usage(stats: RequestStats, usage: dict[str, Any] | None) -> None:
    """Completions' `usage` (`prompt_tokens`, `completion_tokens`) or the Responses API's (`input_tokens`,
    `output_tokens`); embeddings have prompt tokens only, tokenize and detokenize no usage."""
    if usage:
        stats.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        stats.completion_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)


USAGE_CHUNK_MARK = b'"choices":[]'
EMPTY_CONTENT_MARKS = (b'"content":""', b'"text":""')
CONTENT_MARKS = (b'"content":"', b'"text":"')
TEXT_DELTA_EVENT = "response.output_text.delta"


def _has_token(data: bytes) -> bool:
    """A chunk carries generated text (vLLM's compact JSON: no spaces after colons)."""
    return any(mark in data for mark in CONTENT_MARKS) and not any(mark in data for mark in EMPTY_CONTENT_MARKS)


class CompletionEvents:
    """Chat and text completion chunks: `data:` lines, usage in a chunk of its own, then `[DONE]`."""

    done = b"data: [DONE]\n\n"
    error_prefix = b""

    def __init__(self, stats: RequestStats, keep_usage: bool) -> None:
        self.stats, self.keep_usage = stats, keep_usage

    def frame(self, data: bytes) -> bytes | None:
        """The bytes to send for one engine chunk (None: the usage chunk the client did not ask for)."""
        if USAGE_CHUNK_MARK in data:
            _count_usage(self.stats, json.loads(data).get("usage"))
            if not self.keep_usage:
                return None
        elif _has_token(data):
            self.stats.token_arrived()
        return b"data: " + data + b"\n\n"


class ResponseEvents:
    """The Responses API's named events (`event: response.output_text.delta`), usage inside the last one
    (`response.completed`), no `[DONE]`. Each event is parsed: its name is only inside its JSON."""

    done = b""
    error_prefix = b"event: error\n"

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def frame(self, data: bytes) -> bytes:
        event = json.loads(data)
        kind = str(event.get("type", ""))
        if kind == TEXT_DELTA_EVENT and event.get("delta"):
            self.stats.token_arrived()
        elif isinstance(response := event.get("response"), dict):
            _count_usage(self.stats, response.get("usage"))
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


async def _relay(
    stream: ChunkStream,
    events: CompletionEvents | ResponseEvents,
    gateway: Gateway,
    release: tuple[ServedVersion, str],
    settle: tuple[RateLimiter, Admission | None],
) -> AsyncIterator[bytes]:
    status = CLIENT_CLOSED_REQUEST
    try:
        async for data in stream:
            if (frame := events.frame(data)) is not None:
                yield frame
        status = 200
        if events.done:
            yield events.done
    except ServekitError as error:
        status = error.status_code
        yield events.error_prefix + b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        await stream.aclose()
        gateway.release(*release)
        _finish(gateway, release[0], events.stats, settle, status)
