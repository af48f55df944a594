from __future__ import annotations

import pytest

from serving.errors import InvalidRequestError
from serving.pipeline.input_limits import check_input_limits
from serving.protocol import ChatCompletionRequest, CompletionRequest
from serving.settings import LimitsSettings


def chat(messages: int, **fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}] * messages, **fields)


def test_unset_limits_accept_what_set_limits_refuse():
    huge = [chat(500, max_tokens=100_000), CompletionRequest(model="m", prompt="x", max_tokens=100_000)]
    for request in huge:
        with pytest.raises(InvalidRequestError):
            check_input_limits(request, LimitsSettings(max_messages=499, max_tokens_cap=99_999))
        assert check_input_limits(request, LimitsSettings()) is None


def test_too_many_messages_name_the_field():
    limits = LimitsSettings(max_messages=4)
    check_input_limits(chat(4), limits)
    with pytest.raises(InvalidRequestError) as refused:
        check_input_limits(chat(5), limits)
    assert (refused.value.param, refused.value.code) == ("messages", "too_many_messages")


def test_max_tokens_cap_covers_both_token_fields_and_text_completions():
    limits = LimitsSettings(max_tokens_cap=64)
    check_input_limits(chat(1, max_tokens=64), limits)
    for request in (chat(1, max_tokens=65), chat(1, max_completion_tokens=65),
                    CompletionRequest(model="m", prompt="x", max_tokens=65)):  # fmt: skip
        with pytest.raises(InvalidRequestError) as refused:
            check_input_limits(request, limits)
        assert refused.value.param == "max_tokens"
