"""Config-driven bounds on what one request may ask for, checked before any engine work (400 naming the field)."""

from __future__ import annotations

from serving.errors import InvalidRequestError
from serving.protocol import ModelRequest
from serving.settings import LimitsSettings


def check_input_limits(body: ModelRequest, limits: LimitsSettings) -> None:
    if limits.max_messages is not None and body.message_count > limits.max_messages:
        raise InvalidRequestError(
            f"{body.message_count} messages; this server accepts at most {limits.max_messages} per request.",
            param="messages",
            code="too_many_messages",
        )
    budget = body.output_budget
    if limits.max_tokens_cap is not None and budget is not None and budget > limits.max_tokens_cap:
        raise InvalidRequestError(
            f"max_tokens is {budget}; this server caps it at {limits.max_tokens_cap}.",
            param="max_tokens",
            code="max_tokens_too_large",
        )
