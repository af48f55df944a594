"""OpenAI <-> Triton translation: prompts, sampling parameters, context checks, response shapes, errors."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from serving.backends.triton import openai_format
from serving.backends.triton.backend import translate_error
from serving.errors import ContextLengthExceededError, EngineError, EngineUnavailableError, InvalidRequestError
from serving.registry.store import get_model


@pytest.fixture(scope="module")
def tokenizer(settings):
    return AutoTokenizer.from_pretrained(get_model(settings.model.name).path)


def test_chat_prompt_uses_the_models_template_and_counts_tokens(tokenizer):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]
    request = openai_format.prepare(tokenizer, "chat/completions", {"model": "m", "messages": messages}, 2048)
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert request.prompt == expected
    assert request.prompt_tokens == len(tokenizer(expected, add_special_tokens=False).input_ids)


def test_completion_prompt_is_sent_verbatim(tokenizer):
    request = openai_format.prepare(tokenizer, "completions", {"model": "m", "prompt": ["Once upon"]}, 2048)
    assert request.prompt == "Once upon"
    with pytest.raises(InvalidRequestError) as raised:
        openai_format.prepare(tokenizer, "completions", {"model": "m", "prompt": ["a", "b"]}, 2048)
    assert raised.value.param == "prompt"


def test_sampling_parameters_map_and_refuse_what_the_model_cannot_do():
    payload = {"max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "\n", "user": "u"}
    assert openai_format.sampling_parameters(payload) == {
        "max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n"],
    }  # fmt: skip
    for field, value in [("n", 2), ("logprobs", True), ("presence_penalty", 0.5)]:
        with pytest.raises(InvalidRequestError) as raised:
            openai_format.sampling_parameters({field: value})
        assert raised.value.param == field


def test_context_length_is_checked_with_numbers():
    openai_format.check_context(100, 28, 128)
    with pytest.raises(ContextLengthExceededError, match=r"maximum context length is 128 tokens.*129 tokens"):
        openai_format.check_context(100, 29, 128)
    with pytest.raises(ContextLengthExceededError):
        openai_format.check_context(128, None, 128)


def test_chunks_are_compact_json_the_gateway_relay_recognises(tokenizer):
    request = openai_format.prepare(tokenizer, "chat/completions", {"model": "m", "messages": [{"role": "user"}]}, 64)
    first = openai_format.chunk(request, "Hel", first=True)
    assert b'"delta":{"role":"assistant","content":"Hel"}' in first
    last = json.loads(openai_format.chunk(request, "", "stop"))
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    usage = openai_format.usage_chunk(request, 5)
    assert b'"choices":[]' in usage
    assert json.loads(usage)["usage"]["completion_tokens"] == 5
    text_request = openai_format.prepare(tokenizer, "completions", {"model": "m", "prompt": "x"}, 64)
    assert b'"object":"text_completion"' in openai_format.chunk(text_request, "lo")
    assert b'"text":"lo"' in openai_format.chunk(text_request, "lo")


def test_triton_errors_are_translated():
    context = "This model's maximum context length is 2048 tokens. However, your prompt has 3000 tokens."
    assert isinstance(translate_error(context), ContextLengthExceededError)
    assert isinstance(translate_error("temperature must be >= 0"), InvalidRequestError)
    assert isinstance(translate_error("Request for unknown model: 'm' is not found"), EngineUnavailableError)
    assert isinstance(translate_error("Stub process 'm_0_0' is not healthy."), EngineUnavailableError)
    error = translate_error("generation failed: RuntimeError('boom')")
    assert isinstance(error, EngineError)
    assert error.status_code == 502
