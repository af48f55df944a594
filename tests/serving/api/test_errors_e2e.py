"""Bad input against the real server: status, OpenAI error shape, and the `param` it names."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"
USER = [{"role": "user", "content": "hi"}]


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": "hello"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": USER, "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "messages": USER, "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": USER, "n": 0}, "n"),
        ({"model": MODEL, "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER}, "model"),
    ],
)
def test_invalid_chat_requests_are_400_naming_the_param(server, body, param):
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    error = assert_error(response, 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_malformed_json_is_400(server):
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b'{"model": ',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, code="invalid_json")


def test_unknown_model_is_404_with_the_openai_client(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_context_is_400_with_the_numbers(server, stream):
    long_prompt = "word " * 3000
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": long_prompt}],
        "max_tokens": 8,
        "stream": stream,
    }
    error = assert_error(httpx.post(f"{server.base_url}/v1/chat/completions", json=body), 400)
    assert error["code"] == "context_length_exceeded"
    assert "2048" in error["message"]


def test_max_tokens_over_the_context_is_400(server):
    body = {"model": MODEL, "messages": USER, "max_tokens": 5000}
    error = assert_error(
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body), 400, code="context_length_exceeded"
    )
    assert "5000" in error["message"] and "2048" in error["message"]


def test_oversized_body_is_413(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 1_200_000}]}
    assert_error(httpx.post(f"{server.base_url}/v1/chat/completions", json=body), 413, code="request_too_large")


def test_unknown_route_and_wrong_method_keep_the_shape(server):
    assert_error(httpx.get(f"{server.base_url}/v1/nothing-here"), 404)
    assert_error(httpx.delete(f"{server.base_url}/v1/models"), 405)
