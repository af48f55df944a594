"""The prompt policy of a route or version: `error` (the default) leaves a too-long prompt to the engine's
400; `truncate_left` fits the chat history into the context first."""

from __future__ import annotations

import asyncio

from serving.pipeline.truncation import tokenizer_for, truncate_left
from serving.protocol import ChatCompletionRequest, ModelRequest
from serving.settings import LimitsSettings
from serving.versions import ServedVersion, ServedVersions


async def apply_prompt_policy(
    body: ModelRequest, served: ServedVersion, versions: ServedVersions, limits: LimitsSettings
) -> int:
    """Apply the policy to `body` in place; returns how many messages were dropped."""
    policy = limits.prompt_policies.get(body.model, limits.prompt_policy)
    if policy != "truncate_left" or not isinstance(body, ChatCompletionRequest):
        return 0
    tokenizer = tokenizer_for(versions.resolve(served.parent).model.path if served.parent else served.model.path)
    body.messages, dropped = await asyncio.to_thread(
        truncate_left, tokenizer, body.messages, served.max_model_len, body.output_budget or 1
    )
    return dropped
