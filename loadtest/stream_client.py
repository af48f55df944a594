"""A minimal OpenAI streaming client that times every token: what load tests and benchmarks measure with.

It speaks HTTP only (servekit, a raw vLLM server or any OpenAI-compatible endpoint look the same to it).
`StreamResult.feed_line` is the one SSE parser: the asyncio benchmark below and the gevent Locust users
(`loadtest.users`) both push the lines they read through it, so both time tokens the same way."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

API_KEY_ENV = "OPENAI_API_KEY"


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer $OPENAI_API_KEY` when it is set (the variable the openai client and `vllm bench serve`
    read): a gateway with API keys on refuses keyless requests."""
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def split_sse(rest: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """SSE lines end at LF (or CRLF) and nowhere else. `str.splitlines` and httpx's `iter_lines` also break at
    Unicode separators (U+2028, U+0085, ...) that a generated token can carry unescaped inside the JSON, which
    cut a chunk in two (seen in CI). Returns the complete lines and the unfinished rest."""
    *lines, rest = (rest + chunk).split(b"\n")
    return [line.rstrip(b"\r").decode() for line in lines], rest


def iter_sse_lines(response: httpx.Response) -> Iterator[str]:
    rest = b""
    for chunk in response.iter_bytes():
        lines, rest = split_sse(rest, chunk)
        yield from lines
    if rest:
        yield rest.rstrip(b"\r").decode()


async def aiter_sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    rest = b""
    async for chunk in response.aiter_bytes():
        lines, rest = split_sse(rest, chunk)
        for line in lines:
            yield line
    if rest:
        yield rest.rstrip(b"\r").decode()


@dataclass
class StreamResult:
    ok: bool
    started: float
    first_token_at: float | None = None
    finished: float | None = None
    token_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    version: str | None = None
    error: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def latency_s(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def inter_token_latencies(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]

    def feed_line(self, line: str, now: float) -> bool:
        """Account one SSE line read at `now` (chat deltas or completion text); False once the stream failed.

        Token counts come from the server's usage chunk (`stream_options.include_usage`), token times from
        the chunks that carry text."""
        if not line.startswith("data: ") or line == "data: [DONE]":
            return True
        chunk = json.loads(line[6:])
        if "error" in chunk:
            self.error = chunk["error"].get("message", "stream error")
            return False
        choices = chunk.get("choices") or ()
        if chunk.get("usage") and not choices:
            self.output_tokens = chunk["usage"]["completion_tokens"]
        elif any((c.get("delta") or {}).get("content") or c.get("text") for c in choices):
            self.first_token_at = self.first_token_at or now
            self.token_times.append(now)
        return True


async def stream_chat(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int, extra: dict | None = None
) -> StreamResult:
    """One streaming chat completion; token counts come from the server's usage chunk."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    result = StreamResult(ok=False, started=time.perf_counter())
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            result.version = response.headers.get("x-servekit-version")
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in aiter_sse_lines(response):
                if not result.feed_line(line, time.perf_counter()):
                    return result
        result.ok = True
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        result.finished = time.perf_counter()
    return result


async def run_concurrent(
    url: str, model: str | list[str], prompts: list[str], max_tokens: int, concurrency: int, extra: dict | None = None
) -> tuple[list[StreamResult], float]:
    """Send all prompts with at most `concurrency` in flight; returns results and the wall time. A list of
    models is cycled over the prompts (e.g. one request per adapter in turn)."""
    models = [model] if isinstance(model, str) else model
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(600.0, connect=5.0)
    async with httpx.AsyncClient(headers=auth_headers(), timeout=timeout, limits=limits) as client:

        async def one(i: int, prompt: str) -> StreamResult:
            async with gate:
                return await stream_chat(client, url, models[i % len(models)], prompt, max_tokens, extra)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        return list(results), time.perf_counter() - started
