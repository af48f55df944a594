"""The OpenAI API end to end: the official `openai` client against the built bento and the real vLLM engine."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from serving.registry.store import get_model

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Name three colors of the rainbow."}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(settings):
    return AutoTokenizer.from_pretrained(get_model(settings.model.name).path)


def test_list_models_names_the_registry_version(client, settings):
    models = [m for m in client.models.list().data if m.model_extra["engine"] != "route"]
    assert [m.id for m in models] == [MODEL]
    assert models[0].root == get_model(settings.model.name).tag
    assert models[0].model_extra["engine"] == "vllm"


def test_chat_non_streaming_answers_with_usage(client):
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    assert response.choices[0].message.content.strip()
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_stream_deltas_join_to_the_non_streamed_text(client):
    args = {"model": MODEL, "messages": MESSAGES, "max_tokens": 32, "temperature": 0}
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(**args, stream=True))
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == whole
    assert all(c.usage is None for c in chunks), "usage chunk must be dropped when not requested"


def test_stream_usage_when_requested_matches_non_streamed(client):
    args = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    usage = client.chat.completions.create(**args).usage
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == usage.completion_tokens


def test_usage_counts_match_the_tokenizer(client, tokenizer):
    response = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    prompt_ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert response.usage.prompt_tokens == len(prompt_ids)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 12


def test_text_completions_streaming_and_not(client):
    whole = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert whole.choices[0].text and whole.usage.completion_tokens == 8
    streamed = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_every_response_names_request_id_and_version(server, settings):
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    echoed = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers={"x-request-id": "req-42"})
    assert echoed.headers["x-request-id"] == "req-42"
    assert echoed.headers["x-servekit-version"] == get_model(settings.model.name).tag
    fresh = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert len(fresh.headers["x-request-id"]) >= 16
    streamed = httpx.post(f"{server.base_url}/v1/chat/completions", json={**body, "stream": True})
    assert streamed.headers["x-servekit-version"] == get_model(settings.model.name).tag
    assert streamed.text.rstrip().endswith("data: [DONE]")


def _counter(text: str, name: str, status: str | None = None) -> float:
    """The sum of series `name` over its labels (those with `status`, when given)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and (status is None or f'status="{status}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_after_a_request_and_include_engine_series(server, client):
    before = httpx.get(f"{server.base_url}/metrics").text
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, stream=True).close()
    list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, stream=True))
    after = httpx.get(f"{server.base_url}/metrics").text
    assert _counter(after, "servekit_requests_total", "200") >= _counter(before, "servekit_requests_total", "200") + 1
    for series in (  # the series exist at zero from the start (Prometheus counts from a first sample): they moved
        "servekit_time_to_first_token_seconds_count",
        "servekit_inter_token_latency_seconds_count",
        "servekit_output_tokens_total",
    ):
        assert _counter(after, series) > _counter(before, series), series
    assert "servekit_in_flight_requests" in after
    assert "vllm:num_requests_running" in after


def test_ready_was_503_before_warmup_and_is_200_after(server):
    assert server.before_ready["ready"].status_code == 503
    early_chat = server.before_ready["chat"]
    assert early_chat.status_code == 503
    assert int(early_chat.headers["retry-after"]) > 0
    assert early_chat.json()["error"]["code"] == "engine_unavailable"
    assert httpx.get(f"{server.base_url}/ready").status_code == 200
    assert httpx.get(f"{server.base_url}/readyz").status_code == 200


def _engine_series(engine_url: str, name: str, label: str = "") -> float:
    """The sum of an engine series over the samples carrying `label` (e.g. `finished_reason="length"`)."""
    lines = httpx.get(f"{engine_url}/metrics").text.splitlines()
    samples = [line for line in lines if line.startswith((f"{name}{{", f"{name} ")) and label in line]
    assert samples, f"engine exports no {name} {label}"
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples)


def test_client_disconnect_aborts_the_engine_request(server):
    """Aborted, not run to its end: the engine stops and the request ends short of its 1,500 tokens, not by
    length, however long the stopping takes on a busy machine."""
    by_length = ("vllm:request_success_total", 'finished_reason="length"')
    before_tokens = _engine_series(server.engine_url, "vllm:generation_tokens_total")
    before_length = _engine_series(server.engine_url, *by_length)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
        assert _engine_series(server.engine_url, "vllm:num_requests_running") >= 1
    while _engine_series(server.engine_url, "vllm:num_requests_running") > 0:
        time.sleep(0.05)
    assert _engine_series(server.engine_url, "vllm:generation_tokens_total") - before_tokens < 1500
    assert _engine_series(server.engine_url, *by_length) == before_length
