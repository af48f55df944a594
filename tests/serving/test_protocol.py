from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.protocol import ChatCompletionRequest, CompletionRequest

USER = [{"role": "user", "content": "hi"}]


def test_engine_payload_keeps_unknown_fields_and_renames_the_model():
    request = ChatCompletionRequest.model_validate({"model": "public", "messages": USER, "top_k": 5})
    payload = request.engine_payload("engine-name")
    assert payload["model"] == "engine-name"
    assert payload["top_k"] == 5
    assert "temperature" not in payload, "unset fields must not be sent (engine defaults apply)"


def test_streams_always_ask_the_engine_for_usage():
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": USER, "stream": True})
    assert request.engine_payload("m")["stream_options"] == {"include_usage": True}
    assert not request.wants_usage_in_stream


@pytest.mark.parametrize("override", [{"temperature": 3}, {"top_p": 0}, {"n": 0}, {"messages": []}, {"max_tokens": -1}])
def test_out_of_range_values_are_rejected(override):
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **override})


def test_completion_prompt_forms():
    assert CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3]}).prompt == [1, 2, 3]
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": []})
