"""OpenAI wire protocol: the request bodies servekit validates and the bodies it produces itself.

Requests are validated here so bad input gets a 400 naming its `param`; valid requests are then forwarded
to the engine with unknown fields kept (`extra="allow"`), so engine-specific options such as vLLM's `top_k`
still work. Completion responses come from the engine and are relayed, not re-modelled.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Stop = str | Annotated[list[str], Field(max_length=16)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def output_budget(self) -> int | None:
        """The most tokens the client asked to generate."""
        return self.max_tokens

    @property
    def message_count(self) -> int:
        return 1

    def prompt_tokens_estimate(self) -> int:
        """About one token per 4 characters: what rate limits charge before the engine counts exactly."""
        raise NotImplementedError

    @property
    def wants_usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def engine_payload(self, engine_model: str) -> dict[str, Any]:
        """The body to forward: what the client sent, under the engine's model name, with usage always on
        for streams so servekit can count tokens (the usage chunk is dropped again if the client did not
        ask for it)."""
        payload = self.model_dump(exclude_unset=True)
        payload["model"] = engine_model
        if self.stream:
            payload["stream_options"] = {**payload.get("stream_options", {}), "include_usage": True}
        return payload


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @property
    def output_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def prompt_tokens_estimate(self) -> int:
        return sum(4 + len(str(m.content or "")) // 4 for m in self.messages)


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)] | Annotated[list[int], Field(min_length=1)]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    def prompt_tokens_estimate(self) -> int:
        if isinstance(self.prompt, str):
            return len(self.prompt) // 4 + 1
        return sum(1 if isinstance(p, int) else len(p) // 4 + 1 for p in self.prompt)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "servekit"
    root: str = Field(description="The registry version behind this name.")
    parent: str | None = None
    max_model_len: int | None = None
    engine: str = Field(description="Which engine serves this version (vllm, triton).")
    ready: bool
    on_demand: bool = Field(False, description="A base engine started for a route; stopped when no route uses it.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EngineStatus(BaseModel):
    """One engine as `GET /admin/engines` shows it: what a CLI waiting on an engine start reports."""

    name: str
    version: str
    state: str
    state_for_s: float = Field(description="Seconds since the engine entered `state`.")
    restarts: int
    on_demand: bool
    last_error: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
