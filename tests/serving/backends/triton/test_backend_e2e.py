"""A real `tritonserver` (from the Triton venv) serving the default model, started once for this module under
`EngineSupervisor`: readiness only after a real warm-up generation, then OpenAI behaviour, batching evidence,
and last (file order) a kill that the supervisor recovers from: it only disrupts this module's own server, so it
is not marked `disruptive` (that would move it past the module and start the server twice)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from transformers import AutoTokenizer

from serving.backends.supervisor import EngineState, EngineSupervisor
from serving.backends.triton.backend import TritonBackend
from serving.errors import ContextLengthExceededError, InvalidRequestError
from serving.registry.store import get_model
from serving.settings import EngineSettings, WarmupSettings
from tests.conftest import free_port

# The first test pays for tritonserver's start, the last for its restart (each up to `startup_timeout_s`, 300 s).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def supervisor(settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EngineSupervisor]:
    workdir = tmp_path_factory.mktemp("triton")
    triton = settings.triton.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port(), "max_batch_size": 8}
    )
    backend = TritonBackend(
        triton, get_model(settings.model.name).path, settings.model.name, workdir / "triton.log", workdir / "repo"
    )
    engine = EngineSettings(startup_timeout_s=triton.startup_timeout_s, health_interval_s=0.2, restart_backoff_s=0.5)
    supervisor = EngineSupervisor(backend, engine, WarmupSettings())
    supervisor.start()
    try:
        await supervisor.wait_ready(triton.startup_timeout_s)
        yield supervisor
    finally:
        await supervisor.stop()


@pytest.fixture(scope="module")
def backend(supervisor: EngineSupervisor) -> TritonBackend:
    return supervisor.backend


async def chat(backend: TritonBackend, **fields: Any) -> dict[str, Any]:
    return await backend.complete("chat/completions", {"model": "m", "messages": QUESTION, "temperature": 0, **fields})


async def stream_chunks(backend: TritonBackend, endpoint: str = "chat/completions", **fields: Any) -> list[dict]:
    body = {"model": "m", "temperature": 0, **fields}
    if endpoint == "chat/completions":
        body.setdefault("messages", QUESTION)
    stream = await backend.open_stream(endpoint, body)
    return [json.loads(data) async for data in stream]


def joined(chunks: list[dict]) -> str:
    return "".join(c["delta"].get("content", "") for chunk in chunks for c in chunk["choices"])


async def test_ready_after_warm_up_generation(supervisor: EngineSupervisor, backend: TritonBackend):
    assert supervisor.state is EngineState.ready
    assert await backend.is_healthy()
    stats = await backend.settled_statistics(1)
    assert int(stats["inference_count"]) >= 1  # the warm-up really generated


async def test_chat_has_text_and_usage_from_the_tokenizer(backend: TritonBackend):
    reply = await chat(backend, max_tokens=24)
    assert reply["object"] == "chat.completion"
    assert "Paris" in reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    tokenizer = AutoTokenizer.from_pretrained(backend.model_path)
    prompt_ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert reply["usage"]["prompt_tokens"] == len(prompt_ids["input_ids"])
    assert 0 < reply["usage"]["completion_tokens"] <= 24


async def test_joined_stream_equals_non_streamed_text_at_temperature_0(backend: TritonBackend):
    reply = await chat(backend, max_tokens=24)
    chunks = await stream_chunks(backend, max_tokens=24)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len(chunks) > 3  # token by token, not one blob
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == reply["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"]
    assert joined(chunks) == reply["choices"][0]["message"]["content"]


async def test_text_completion_streams_text_chunks(backend: TritonBackend):
    chunks = await stream_chunks(backend, "completions", prompt="The capital of France is", max_tokens=6)
    assert chunks[0]["object"] == "text_completion"
    assert "".join(c["text"] for chunk in chunks for c in chunk["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_stop_sequence_ends_the_answer_before_it(backend: TritonBackend):
    full = (await chat(backend, max_tokens=24))["choices"][0]["message"]["content"]
    stop = re.findall(r"\w+", full)[2]  # a word from the middle of the greedy answer
    reply = await chat(backend, max_tokens=24, stop=[stop])
    assert reply["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert joined(await stream_chunks(backend, max_tokens=24, stop=stop)) == full[: full.index(stop)]


async def test_max_tokens_and_seeded_sampling(backend: TritonBackend):
    limited = await chat(backend, max_tokens=3)
    assert limited["usage"]["completion_tokens"] == 3
    assert limited["choices"][0]["finish_reason"] == "length"
    sampled = [await chat(backend, max_tokens=8, temperature=1.0, top_p=0.9, seed=7) for _ in range(2)]
    assert sampled[0]["choices"][0]["message"] == sampled[1]["choices"][0]["message"]


async def test_rejected_requests_become_openai_errors(backend: TritonBackend):
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 2048 tokens"):
        await chat(backend, max_tokens=5000)
    with pytest.raises(InvalidRequestError, match="temperature"):  # refused by model.py, translated from Triton
        await chat(backend, max_tokens=4, temperature=-1)
    with pytest.raises(InvalidRequestError, match="temperature"):
        await stream_chunks(backend, max_tokens=4, temperature=-1)


async def test_concurrent_requests_are_batched(backend: TritonBackend):
    before = (await backend.inference_statistics())["model_stats"][0]
    replies = await asyncio.gather(*(chat(backend, max_tokens=8) for _ in range(8)))
    assert all(reply["usage"]["completion_tokens"] > 0 for reply in replies)
    after = await backend.settled_statistics(int(before["inference_count"]) + 8)
    requests = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert requests == 8
    assert executions < requests
    assert max(int(stats["batch_size"]) for stats in after["batch_stats"]) > 1


async def test_killed_tritonserver_is_seen_and_restarted(supervisor: EngineSupervisor, backend: TritonBackend):
    os.kill(backend.pid, signal.SIGKILL)
    for _ in range(100):
        if backend.exited() and supervisor.state is not EngineState.ready:
            break
        await asyncio.sleep(0.1)
    assert backend.exited()
    assert not await backend.is_healthy()
    assert supervisor.state is not EngineState.ready
    await supervisor.wait_ready(backend.settings.startup_timeout_s)
    assert supervisor.restarts >= 1
    assert (await chat(backend, max_tokens=4))["usage"]["completion_tokens"] > 0
