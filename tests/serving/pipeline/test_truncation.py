"""`truncate_left` with the default model's real tokenizer and chat template."""

from __future__ import annotations

import pytest

from serving.errors import ContextLengthExceededError
from serving.pipeline.truncation import prompt_tokens, tokenizer_for, truncate_left
from serving.protocol import ChatMessage
from serving.registry.store import get_model


@pytest.fixture(scope="module")
def tokenizer(settings):
    return tokenizer_for(get_model(settings.model.name).path)


def history(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage(role="system", content="You are terse.")]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append(ChatMessage(role=role, content=f"turn {i}: " + "lorem ipsum dolor sit amet " * 8))
    return [*messages, ChatMessage(role="user", content="And the last question?")]


def test_oldest_turns_go_first_keeping_system_and_last_message(tokenizer):
    messages = history(30)
    assert prompt_tokens(tokenizer, messages) > 600
    kept, dropped = truncate_left(tokenizer, messages, max_model_len=600, output_budget=100)
    assert dropped > 0 and len(kept) == len(messages) - dropped
    assert kept[0].content == "You are terse." and kept[-1].content == "And the last question?"
    assert kept[1:-1] == messages[1 + dropped : -1]  # a contiguous tail of the history survives
    assert prompt_tokens(tokenizer, kept) <= 500 < prompt_tokens(tokenizer, [kept[0], messages[dropped], *kept[1:]])


def test_a_short_prompt_is_left_alone(tokenizer):
    messages = history(2)
    assert truncate_left(tokenizer, messages, max_model_len=2048, output_budget=16) == (messages, 0)


def test_when_even_the_last_message_does_not_fit_it_is_a_context_error(tokenizer):
    with pytest.raises(ContextLengthExceededError) as refused:
        truncate_left(tokenizer, history(4), max_model_len=30, output_budget=16)
    assert refused.value.param == "messages"
