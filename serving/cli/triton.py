"""`servekit triton ...`: install the Triton venv, and measure what dynamic batching buys."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from serving.backends import triton_install
from serving.backends.triton import TritonBackend
from serving.settings import Settings, TritonSettings, load_settings

app = typer.Typer(no_args_is_help=True, help="The Triton Inference Server engine.")
console = Console(width=160)
ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (default: servekit.yaml).")
TOPICS = ("the ocean", "a lighthouse", "bread baking", "the moon", "mountain trails", "a library", "old trains")


@app.command()
def setup(config: Path | None = ConfigOption) -> None:
    """Create `triton.venv` with nvidia-pytriton (tritonserver + Python backend) and torch; a no-op when done."""
    venv = load_settings(config).triton.venv.resolve()
    installed = triton_install.setup(venv)
    console.print(f"Triton venv {'installed' if installed else 'already installed'}: {venv}")


async def _one(backend: TritonBackend, prompt: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat request; exactly `max_tokens` tokens (`ignore_eos`) so every request does equal work."""
    started = time.perf_counter()
    payload = {
        "model": backend.served_name,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    stream = await backend.open_stream("chat/completions", payload)
    token_times = []
    async for data in stream:
        if b'"content":"' in data and b'"content":""' not in data:
            token_times.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(token_times)]
    return {"ttft_s": token_times[0] - started, "per_token_s": statistics.mean(gaps) if gaps else 0.0}


async def _settled_statistics(backend: TritonBackend, expected: int) -> dict:
    """Triton counts a batch when `execute` returns, a moment after its last response reached the client."""
    deadline = time.monotonic() + 10.0
    while True:
        stats = (await backend.inference_statistics())["model_stats"][0]
        if int(stats["inference_count"]) >= expected or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.1)


async def _measure(
    settings: TritonSettings, model_path: Path, name: str, clients: int, requests: int, max_tokens: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="servekit-triton-bench-") as workdir:
        log_path = Path(tempfile.gettempdir()) / f"servekit-triton-bench-{settings.max_batch_size}.log"
        backend = TritonBackend(settings, model_path, name, log_path, Path(workdir))
        started = time.perf_counter()
        await backend.start()
        while not await backend.is_healthy():
            if backend.exited():
                raise RuntimeError(f"tritonserver exited:\n{backend.log_tail()}")
            await asyncio.sleep(0.2)
        ready_s = time.perf_counter() - started
        try:
            await _one(backend, "Say hello.", 4)
            prompts = [f"Write a long story about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(clients * requests)]
            queue: asyncio.Queue[str] = asyncio.Queue()
            for prompt in prompts:
                queue.put_nowait(prompt)
            results: list[dict[str, float]] = []

            async def client() -> None:
                while not queue.empty():
                    results.append(await _one(backend, queue.get_nowait(), max_tokens))

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall_s = time.perf_counter() - started
            stats = await _settled_statistics(backend, expected=len(prompts) + 1)
        finally:
            await backend.stop()
    ttfts = sorted(r["ttft_s"] for r in results)
    return {
        "max_batch_size": settings.max_batch_size,
        "ready_s": round(ready_s, 2),
        "req_s": round(len(results) / wall_s, 3),
        "output_tok_s": round(len(results) * max_tokens / wall_s, 1),
        "ttft_p50_s": round(ttfts[len(ttfts) // 2], 3),
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.95))], 3),
        "per_token_ms": round(1000 * statistics.mean(r["per_token_s"] for r in results), 1),
        "requests": int(stats["inference_count"]),
        "executions": int(stats["execution_count"]),
    }


async def _measure_all(
    settings: Settings, model_path: Path, sizes: tuple[int, ...], clients: int, requests: int, max_tokens: int
) -> list[dict[str, float]]:
    """Both runs in one event loop: grpc.aio keeps process-wide state tied to the loop it first ran in."""
    return [
        await _measure(
            settings.triton.model_copy(update={"max_batch_size": size}),
            model_path,
            settings.model.name,
            clients,
            requests,
            max_tokens,
        )
        for size in sizes
    ]


@app.command()
def bench(
    config: Path | None = ConfigOption,
    clients: int = typer.Option(8, help="Concurrent clients."),
    requests: int = typer.Option(4, help="Requests per client."),
    max_tokens: int = typer.Option(32, help="New tokens per request."),
    batch_size: int = typer.Option(8, help="max_batch_size of the batched run (the other run uses 1)."),
    out: Path | None = typer.Option(None, help="Write the results as JSON here."),
) -> None:
    """Same load against Triton with dynamic batching and with batching off (max_batch_size 1), over gRPC."""
    from serving.registry.store import get_model

    settings = load_settings(config)
    model_path = get_model(settings.model.name, settings.model.version).path
    sizes = (batch_size, 1)
    runs = asyncio.run(_measure_all(settings, model_path, sizes, clients, requests, max_tokens))
    table = Table(title=f"Triton: {clients} clients x {requests} requests x {max_tokens} tokens")
    for key in runs[0]:
        table.add_column(key)
    for run in runs:
        table.add_row(*(str(value) for value in run.values()))
    console.print(table)
    console.print(f"dynamic batching speed-up: {runs[0]['req_s'] / runs[1]['req_s']:.2f}x req/s")
    if out:
        out.write_text(json.dumps(runs, indent=2))
