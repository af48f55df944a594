"""The app's routes through the whole ASGI stack (middlewares, route classes, error layer), in front of an
in-memory engine; the same routes on the real engine and BentoML: test_openai_e2e.py, test_errors_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.api.app import create_app
from serving.gateway import Gateway
from serving.router.router import embedded_router
from serving.settings import AccessLogSettings, Settings
from serving.state import connect
from tests.serving.fake_engine import ROLE_CHUNK, TOKEN_CHUNK, served_version

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
async def engine_up() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
async def client(tmp_path: Path, engine_up: asyncio.Event) -> AsyncIterator[httpx.AsyncClient]:
    served = served_version("chat", engine_up, version="v7")
    gateway = Gateway([served], embedded_router(connect(tmp_path / "state.db"), {}))
    gateway.start()
    transport = httpx.ASGITransport(app=create_app(Settings(access_log=AccessLogSettings(enabled=False)), gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://servekit") as client:
        client.engine = served.supervisor.backend
        yield client
    await gateway.stop()


async def ready(client: httpx.AsyncClient, engine_up: asyncio.Event) -> None:
    engine_up.set()
    async with asyncio.timeout(5):
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.01)


async def test_until_the_engine_is_warm_ready_and_completions_say_503_with_retry_after(client):
    assert (await client.get("/health")).json() == {"status": "ok"}
    for response in (await client.get("/ready"), await client.post("/v1/chat/completions", json=CHAT)):
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert (await client.get("/ready")).json()["engines"] == {"chat": "starting"}


async def test_chat_answers_as_json_and_as_a_relayed_stream_with_the_serving_version(client, engine_up):
    await ready(client, engine_up)
    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-1"})
    assert answer.status_code == 200 and answer.json()["usage"]["total_tokens"] == 8
    assert (answer.headers["x-servekit-version"], answer.headers["x-request-id"]) == ("chat:v7", "req-1")
    stream = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.text == f"data: {ROLE_CHUNK.decode()}\n\ndata: {TOKEN_CHUNK.decode()}\n\ndata: [DONE]\n\n"
    sent = client.engine.payloads[-1]
    assert sent["model"] == "chat" and sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("path", "body", "endpoint"),
    [
        ("/v1/responses", {"input": "hi", "max_output_tokens": 4}, "responses"),
        ("/v1/embeddings", {"input": ["a", "b"]}, "embeddings"),
        ("/tokenize", {"prompt": "hi"}, "tokenize"),
        ("/detokenize", {"tokens": [1, 2]}, "detokenize"),
    ],
)
async def test_vllms_other_routes_take_the_completion_path(client, engine_up, path, body, endpoint):
    """Same version resolution, headers and metrics as a chat completion; the engine is asked on its own path."""
    await ready(client, engine_up)
    answer = await client.post(path, json={"model": "chat", **body}, headers={"x-request-id": "req-2"})
    assert answer.status_code == 200, answer.text
    assert (answer.headers["x-servekit-version"], answer.headers["x-request-id"]) == ("chat:v7", "req-2")
    assert client.engine.endpoints[-1] == endpoint and client.engine.payloads[-1] == {"model": "chat", **body}
    unknown = await client.post(path, json={"model": "nosuch", **body})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    metrics = (await client.get("/metrics")).text
    assert 'servekit_requests_total{model="chat",route="chat",status="200",version="chat:v7"} 1.0' in metrics


async def test_routes_that_cannot_stream_refuse_stream_true_naming_the_field(client, engine_up):
    await ready(client, engine_up)
    refused = await client.post("/tokenize", json={"model": "chat", "prompt": "hi", "stream": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"
    neither = await client.post("/tokenize", json={"model": "chat"})
    assert neither.status_code == 400 and "exactly one of `prompt` and `messages`" in neither.json()["error"]["message"]


async def test_models_lists_each_served_version(client, engine_up):
    await ready(client, engine_up)
    (card,) = (await client.get("/v1/models")).json()["data"]
    assert (card["id"], card["root"], card["ready"], card["max_model_len"]) == ("chat", "chat:v7", True, 2048)


async def test_bad_requests_and_unknown_paths_get_the_openai_error_shape(client, engine_up):
    await ready(client, engine_up)
    cases = [
        (client.post("/v1/chat/completions", json={**CHAT, "messages": []}), 400, "messages"),
        (client.post("/v1/chat/completions", json={**CHAT, "model": "nosuch"}), 404, "model"),
        (client.post("/v1/completions", content=b"{not json"), 400, None),
        (client.get("/v1/nosuch"), 404, None),
        (client.get("/v1/chat/completions"), 405, None),
    ]
    for call, status, param in cases:
        response = await call
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        if param is not None:
            assert error["param"] == param


async def test_metrics_count_what_was_served(client, engine_up):
    await ready(client, engine_up)
    await client.post("/v1/chat/completions", json=CHAT)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for sample in family.samples
    }
    labels = (("model", "chat"), ("route", "chat"), ("status", "200"), ("version", "chat:v7"))
    assert samples[("servekit_requests_total", labels)] == 1
