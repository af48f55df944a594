"""A minimal OpenAI streaming client that times every token: what load tests and benchmarks measure with.

It speaks HTTP only (servekit, a raw vLLM server or any OpenAI-compatible endpoint look the same to it)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx


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
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "stream error")
                    return result
                if chunk.get("usage") and not chunk.get("choices"):
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                elif any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
                    now = time.perf_counter()
                    result.first_token_at = result.first_token_at or now
                    result.token_times.append(now)
        result.ok = True
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    finally:
        result.finished = time.perf_counter()
    return result


async def run_concurrent(
    url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int, extra: dict | None = None
) -> tuple[list[StreamResult], float]:
    """Send all prompts with at most `concurrency` in flight; returns results and the wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0), limits=limits) as client:

        async def one(prompt: str) -> StreamResult:
            async with gate:
                return await stream_chat(client, url, model, prompt, max_tokens, extra)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(p) for p in prompts))
        return list(results), time.perf_counter() - started
