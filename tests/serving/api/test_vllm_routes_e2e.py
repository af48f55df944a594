"""What vLLM's server serves beside completions, through servekit against the session's real server: the
Responses API with the official `openai` client, tokenize/detokenize, and clear OpenAI-shaped refusals for
what this engine does not serve (embeddings from a generative model, tools without a parser)."""

from __future__ import annotations

import httpx
import openai
import pytest

from serving.registry.store import get_model

MODEL = "smollm2-135m-instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def _requests_total(base_url: str, route: str) -> float:
    lines = httpx.get(f"{base_url}/metrics").text.splitlines()
    counted = [line for line in lines if line.startswith("servekit_requests_total{") and f'route="{route}"' in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counted)


def test_responses_api_answers_with_usage_and_the_serving_version(server, client, settings):
    before = _requests_total(server.base_url, MODEL)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Name a color.", max_output_tokens=8, temperature=0
    )
    response = raw.parse()
    assert raw.headers["x-servekit-version"] == get_model(settings.model.name).tag
    assert len(raw.headers["x-request-id"]) >= 16
    assert response.output_text and response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert _requests_total(server.base_url, MODEL) == before + 1


def test_responses_api_streams_named_events_whose_deltas_join_to_the_answer(client):
    args = {"model": MODEL, "input": "Name a color.", "max_output_tokens": 8, "temperature": 0}
    whole = client.responses.create(**args).output_text
    events = list(client.responses.create(**args, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole
    assert events[-1].response.usage.output_tokens == 8


def test_responses_api_errors_keep_the_openai_shape(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=5000)
    assert refused.value.body["param"] == "max_output_tokens" and "2048" in refused.value.body["message"]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="no-such-model", input="hi")
    assert unknown.value.body["code"] == "model_not_found"


def test_tokenize_and_detokenize_round_trip_with_servekits_headers(server):
    tokenized = httpx.post(
        f"{server.base_url}/tokenize", json={"model": MODEL, "prompt": "Hello world"}, headers={"x-request-id": "tk-1"}
    )
    assert tokenized.status_code == 200, tokenized.text
    assert tokenized.headers["x-request-id"] == "tk-1" and tokenized.headers["x-servekit-version"]
    tokens = tokenized.json()["tokens"]
    assert tokenized.json()["count"] == len(tokens) > 0
    detokenized = httpx.post(f"{server.base_url}/detokenize", json={"model": MODEL, "tokens": tokens})
    assert detokenized.status_code == 200 and detokenized.json()["prompt"] == "Hello world"
    messages = [{"role": "user", "content": "hi"}]
    chat = httpx.post(f"{server.base_url}/tokenize", json={"model": MODEL, "messages": messages})
    assert chat.json()["count"] > 2  # the chat template's framing around the one word


def test_embeddings_from_a_generative_model_are_refused_clearly(client):
    with pytest.raises(openai.NotFoundError) as refused:
        client.embeddings.create(model=MODEL, input="hi")
    error = refused.value.body
    assert error["code"] == "endpoint_not_served" and error["type"] == "invalid_request_error"
    assert "does not serve /v1/embeddings" in error["message"] and "embedding model" in error["message"]


def test_tools_without_a_tool_call_parser_get_vllms_reason_in_openai_shape(client):
    """SmolLM2-135M's chat template has no tools; the engine runs without `--enable-auto-tool-choice` (README:
    Tool calling) and says so, as a 400 in servekit's error shape."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], max_tokens=4
        )
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    assert "--enable-auto-tool-choice" in error["message"] and "--tool-call-parser" in error["message"]
