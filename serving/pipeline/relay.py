"""Relaying an engine's stream to the client chunk by chunk as it arrives (no buffering), as the engine's bytes.

Only the final usage chunk (which servekit always requests, and drops again when the client did not ask for it)
is parsed; tokens are timed by a byte test, not a JSON parse. Responses API streams are named events with usage
in their last one (`response.completed`) and no `[DONE]`; each is parsed for its name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from serving.backends.base import ChunkStream
from serving.errors import ServekitError
from serving.metrics.stats import RequestStats

USAGE_CHUNK_MARK = b'"choices":[]'
EMPTY_CONTENT_MARKS = (b'"content":""', b'"text":""')
CONTENT_MARKS = (b'"content":"', b'"text":"')
TEXT_DELTA_EVENT = "response.output_text.delta"


def count_usage(stats: RequestStats, usage: dict[str, Any] | None) -> None:
    """Completions' `usage` (`prompt_tokens`, `completion_tokens`) or the Responses API's (`input_tokens`,
    `output_tokens`); embeddings have prompt tokens only, tokenize and detokenize no usage."""
    if usage:
        stats.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        stats.completion_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)


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
            count_usage(self.stats, json.loads(data).get("usage"))
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
            count_usage(self.stats, response.get("usage"))
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


async def relay(
    stream: ChunkStream,
    events: CompletionEvents | ResponseEvents,
    ended: Callable[[int], None],
    close: Callable[[], Awaitable[None]],
    observe: Callable[[bytes], None] | None = None,
) -> AsyncIterator[bytes]:
    """The client's stream: `ended(status)` once it is complete or broke off (a client that left keeps 499),
    then `close()` gives back everything the request held. `observe` sees every frame sent (a shadowed
    request's answer, kept for the comparison)."""
    try:
        async for data in stream:
            if (frame := events.frame(data)) is not None:
                if observe is not None:
                    observe(frame)
                yield frame
        ended(200)
        if events.done:
            yield events.done
    except ServekitError as error:
        ended(error.status_code)
        yield events.error_prefix + b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        await close()
