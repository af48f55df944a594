"""`truncate_left`: drop the oldest chat turns until prompt + max_tokens fits the version's context, keeping every
system/developer message and the last message. Token counts come from the version's own tokenizer and chat
template (loaded once per model directory, and only for routes that use the policy)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from serving.errors import ContextLengthExceededError
from serving.protocol import ChatMessage

PINNED_ROLES = ("system", "developer")


@functools.lru_cache(maxsize=8)
def tokenizer_for(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def prompt_tokens(tokenizer: Any, messages: list[ChatMessage]) -> int:
    rendered = [
        {"role": m.role, "content": m.content if isinstance(m.content, str) else str(m.content or "")} for m in messages
    ]
    return len(tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=True, return_dict=False))


def truncate_left(
    tokenizer: Any, messages: list[ChatMessage], max_model_len: int, output_budget: int
) -> tuple[list[ChatMessage], int]:
    """The messages that fit and how many were dropped; ContextLengthExceededError when even the pinned
    messages and the last one do not fit."""
    droppable = [i for i, m in enumerate(messages[:-1]) if m.role not in PINNED_ROLES]
    kept = list(range(len(messages)))
    limit = max_model_len - output_budget
    used = prompt_tokens(tokenizer, messages)
    while used > limit and droppable:
        kept.remove(droppable.pop(0))
        used = prompt_tokens(tokenizer, [messages[i] for i in kept])
    if used > limit:
        raise ContextLengthExceededError(
            f"Even after dropping all {len(messages) - len(kept)} droppable messages the prompt has {used} tokens; "
            f"with {output_budget} for the answer that exceeds the context of {max_model_len} tokens.",
            param="messages",
        )
    return [messages[i] for i in kept], len(messages) - len(kept)
