"""Multi-LoRA on the real engine: hot load/unload through the admin API, served under their own names."""

from __future__ import annotations

import concurrent.futures
import threading

import httpx
import openai
import pytest

BASE = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


def load(server, tag: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/models/{tag}/load", timeout=120)


def unload(server, tag: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/models/{tag}/unload", timeout=120)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_adapter_hot_load_serve_and_unload(server, client, random_adapters):
    tag = random_adapters["a"].tag
    loaded = load(server, tag)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["parent"] == BASE
    cards = {m.id: m for m in client.models.list().data}
    assert cards[tag].parent == BASE and cards[tag].root == tag

    args = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    base_answer = client.chat.completions.create(model=BASE, **args).choices[0].message.content
    raw = client.chat.completions.with_raw_response.create(model=tag, **args)
    assert raw.headers["x-servekit-version"] == tag
    assert raw.parse().choices[0].message.content != base_answer

    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert f'servekit_requests_total{{model="test-adapter-a",route="{tag}",status="200",version="{tag}"}}' in metrics

    assert unload(server, tag).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=tag, **args)
    assert tag not in {m.id for m in client.models.list().data}


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("foreign", 400, "adapter_base_mismatch"),
        ("wide", 400, "adapter_rank_too_large"),
        ("mlp", 400, "adapter_modules_not_served"),
    ],
)
def test_unservable_adapters_are_refused_with_reasons(server, random_adapters, key, status, code):
    response = load(server, random_adapters[key].tag)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if key == "foreign":
        assert "other-base:v1" in error["message"] and random_adapters["a"].labels["base"] in error["message"]
    if key == "mlp":
        assert "`gate_proj`, `up_proj`" in error["message"] and "engine.lora_target_modules" in error["message"]


def test_unknown_versions_and_the_base_cannot_be_loaded_or_unloaded(server):
    assert load(server, "ghost:0000").json()["error"]["code"] == "model_not_found"
    assert load(server, "ghost:0000").status_code == 404
    assert unload(server, "ghost:0000").status_code == 404
    assert unload(server, BASE).status_code == 400


def test_loading_and_unloading_under_streaming_load_fails_no_request(server, random_adapters):
    stop = threading.Event()

    def stream_until_stopped() -> list[int]:
        statuses = []
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            while not stop.is_set():
                body = {"model": BASE, "messages": QUESTION, "max_tokens": 16, "stream": True}
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = "".join(response.iter_text())
                    statuses.append(response.status_code if text.rstrip().endswith("[DONE]") else -1)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream_until_stopped) for _ in range(4)]
        try:
            for _ in range(3):
                for key in ("a", "b"):
                    assert load(server, random_adapters[key].tag).status_code == 200
                for key in ("a", "b"):
                    assert unload(server, random_adapters[key].tag).status_code == 200
        finally:
            stop.set()  # a failed assert must not leave the pool waiting on endless streams
        statuses = [status for future in streams for status in future.result()]
    assert statuses and all(status == 200 for status in statuses)
