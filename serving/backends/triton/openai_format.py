"""OpenAI requests in, OpenAI responses out, for an engine that only takes text and sampling parameters.

Triton serves a generic model, so servekit does the OpenAI parts itself: the chat template (with the version's own
tokenizer, the same one the model loads), prompt token counting and the context-length check (exact numbers
before anything is queued), and the response/chunk shapes, written as compact JSON like vLLM's so the gateway's
byte-level relay (`"choices":[]` marks the usage chunk, `"content":"` / `"text":"` a token) works unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from serving.backends.base import Endpoint
from serving.errors import ContextLengthExceededError, InvalidRequestError

# Fields a vLLM engine honours that this model does not: refused, never silently ignored.
UNSUPPORTED_FIELDS = (
    "logprobs", "top_logprobs", "echo", "presence_penalty", "frequency_penalty", "logit_bias", "best_of",
    "tools", "tool_choice", "functions", "response_format", "suffix",
)  # fmt: skip


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class PreparedRequest:
    """What Triton receives for one OpenAI request, plus what the response needs."""

    endpoint: Endpoint
    model: str
    prompt: str
    prompt_tokens: int
    sampling: dict[str, Any]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return f"{'chatcmpl' if self.endpoint == 'chat/completions' else 'cmpl'}-{self.request_id}"


def _message_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise InvalidRequestError("only text content parts are supported", param=f"messages[{index}].content")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def render_prompt(tokenizer: PreTrainedTokenizerBase, endpoint: Endpoint, payload: dict[str, Any]) -> str:
    """The exact text the model continues: the chat template for chats, the prompt itself for completions."""
    if endpoint == "completions":
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequestError("Triton serves one text prompt per request", param="prompt")
        return prompt
    messages = [
        {"role": message["role"], "content": _message_text(message.get("content"), index)}
        for index, message in enumerate(payload["messages"])
    ]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja raises TemplateError / ValueError for messages the template refuses
        raise InvalidRequestError(f"the chat template rejected the messages: {exc}", param="messages") from exc


def sampling_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sampling fields -> the model's `sampling_parameters` JSON; refuses what it cannot honour."""
    if payload.get("n", 1) != 1:
        raise InvalidRequestError("n > 1 is not supported by the Triton engine", param="n")
    for name in UNSUPPORTED_FIELDS:
        if payload.get(name):
            raise InvalidRequestError(f"`{name}` is not supported by the Triton engine", param=name)
    sampling: dict[str, Any] = {}
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens is not None:
        sampling["max_tokens"] = int(max_tokens)
    for name in ("temperature", "top_p", "seed", "ignore_eos"):
        if payload.get(name) is not None:
            sampling[name] = payload[name]
    stop = payload.get("stop")
    if stop:
        sampling["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return sampling


def check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    """Refuse before queueing, with the numbers (vLLM's wording, so clients that parse it keep working)."""
    requested = prompt_tokens + (max_tokens or 0)
    if prompt_tokens >= max_model_len or requested > max_model_len:
        detail = f"{prompt_tokens} in the messages, {max_tokens or 0} in the completion"
        raise ContextLengthExceededError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{requested} tokens ({detail}). Please reduce the length of the messages or completion.",
            param="messages",
        )


def prepare(
    tokenizer: PreTrainedTokenizerBase, endpoint: Endpoint, payload: dict[str, Any], max_model_len: int
) -> PreparedRequest:
    prompt = render_prompt(tokenizer, endpoint, payload)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    sampling = sampling_parameters(payload)
    check_context(prompt_tokens, sampling.get("max_tokens"), max_model_len)
    return PreparedRequest(endpoint, str(payload.get("model", "")), prompt, prompt_tokens, sampling)


def usage(request: PreparedRequest, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": request.prompt_tokens + completion_tokens,
    }


def completion_body(request: PreparedRequest, text: str, finish_reason: str, completion_tokens: int) -> dict:
    """A non-streaming `chat.completion` / `text_completion` response."""
    if request.endpoint == "chat/completions":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text}
        kind = "text_completion"
    return {
        "id": request.response_id,
        "object": kind,
        "created": request.created,
        "model": request.model,
        "choices": [{**choice, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(request, completion_tokens),
    }


def chunk(request: PreparedRequest, text: str, finish_reason: str | None = None, first: bool = False) -> bytes:
    """One streamed chunk: a text delta, the opening role delta (`first`), or the closing finish reason."""
    if request.endpoint == "chat/completions":
        delta: dict[str, str] = {"role": "assistant", "content": text} if first else {"content": text}
        if finish_reason and not text:
            delta = {}
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text}
        kind = "text_completion"
    body = {
        "id": request.response_id,
        "object": kind,
        "created": request.created,
        "model": request.model,
        "choices": [{**choice, "logprobs": None, "finish_reason": finish_reason}],
    }
    return _compact(body)


def usage_chunk(request: PreparedRequest, completion_tokens: int) -> bytes:
    kind = "chat.completion.chunk" if request.endpoint == "chat/completions" else "text_completion"
    body = {
        "id": request.response_id,
        "object": kind,
        "created": request.created,
        "model": request.model,
        "choices": [],
        "usage": usage(request, completion_tokens),
    }
    return _compact(body)
