"""OpenAI wire protocol: the request bodies servekit validates and the bodies it produces itself.

Requests are validated here so bad input gets a 400 naming its `param`; valid requests are then forwarded
to the engine with unknown fields kept (`extra="allow"`), so engine-specific options such as vLLM's `top_k`
still work. Completion responses come from the engine and are relayed, not re-modelled.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class ModelRequest(BaseModel):
    """What every request the gateway forwards to a version's engine has: the model it names, who it is for,
    and what rate limits and input limits need to know before the engine counts exactly."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    user: str | None = None

    @property
    def output_budget(self) -> int | None:
        """The most tokens the client asked to generate."""
        return None

    def cap_output(self, most: int) -> bool:
        """Generate at most `most` new tokens (a degraded route's cap); True when that lowered the budget. A
        request kind without an output (embeddings, tokenize) is left alone."""
        fields = type(self).model_fields
        limit = next((name for name in ("max_tokens", "max_output_tokens") if name in fields), None)
        if limit is None or (self.output_budget is not None and self.output_budget <= most):
            return False
        setattr(self, limit, most)
        if getattr(self, "max_completion_tokens", None) is not None:
            self.max_completion_tokens = most
        return True

    @property
    def message_count(self) -> int:
        return 1

    def prompt_tokens_estimate(self) -> int:
        """About one token per 4 characters: what rate limits charge before the engine counts exactly."""
        raise NotImplementedError

    @property
    def wants_usage_in_stream(self) -> bool:
        return False

    def engine_payload(self, engine_model: str) -> dict[str, Any]:
        """The body to forward: what the client sent, under the engine's model name."""
        payload = self.model_dump(exclude_unset=True)
        payload["model"] = engine_model
        return payload


class SamplingFields(ModelRequest):
    """Fields shared by chat and text completions."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stream_options: StreamOptions | None = None

    @property
    def output_budget(self) -> int | None:
        return self.max_tokens

    @property
    def wants_usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def engine_payload(self, engine_model: str) -> dict[str, Any]:
        """Usage always on for streams so servekit can count tokens (the usage chunk is dropped again if the
        client did not ask for it)."""
        payload = super().engine_payload(engine_model)
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
        return _messages_tokens_estimate(self.messages)


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)] | Annotated[list[int], Field(min_length=1)]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    def prompt_tokens_estimate(self) -> int:
        return _text_tokens_estimate(self.prompt)


def _messages_tokens_estimate(messages: list[ChatMessage]) -> int:
    """About 4 tokens of framing per message plus one per 4 characters of content."""
    return sum(4 + len(str(m.content or "")) // 4 for m in messages)


def _text_tokens_estimate(text: str | list[str] | list[int] | list[list[int]]) -> int:
    """A prompt given as text, texts, token ids or lists of token ids: ids count exactly, text by characters."""
    if isinstance(text, str):
        return len(text) // 4 + 1
    return sum(1 if isinstance(p, int) else len(p) if isinstance(p, list) else len(p) // 4 + 1 for p in text)


class ResponsesRequest(ModelRequest):
    """OpenAI's Responses API (`POST /v1/responses`), served by vLLM's own implementation."""

    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None

    @property
    def output_budget(self) -> int | None:
        return self.max_output_tokens

    @property
    def message_count(self) -> int:
        return 1 if isinstance(self.input, str) else len(self.input)

    def prompt_tokens_estimate(self) -> int:
        return (len(str(self.input)) + len(self.instructions or "")) // 4 + 1


class EmbeddingRequest(ModelRequest):
    """`POST /v1/embeddings`: served when the version's engine runs an embedding model."""

    stream: Literal[False] = False

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )

    def prompt_tokens_estimate(self) -> int:
        return _text_tokens_estimate(self.input)


class TokenizeRequest(ModelRequest):
    """vLLM's `POST /tokenize`: a prompt, or chat messages rendered with the model's chat template."""

    stream: Literal[False] = False

    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self

    @property
    def message_count(self) -> int:
        return len(self.messages) if self.messages else 1

    def prompt_tokens_estimate(self) -> int:
        if self.messages:
            return _messages_tokens_estimate(self.messages)
        return _text_tokens_estimate(self.prompt or "")


class DetokenizeRequest(ModelRequest):
    """vLLM's `POST /detokenize`: token ids back to text."""

    stream: Literal[False] = False

    tokens: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]

    def prompt_tokens_estimate(self) -> int:
        return len(self.tokens)


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
    max_in_flight: int | None = Field(
        None, description="Requests its engine runs at once before the next is shed (None: no cap)."
    )
    capacity: CapacityKnee | None = Field(None, description="The knee of its capacity profile, if it was profiled.")
    replicas: list[str] | None = Field(
        None, description="The replicas serving it (a pool's, by id); for an adapter only those that carry it."
    )


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
    url: str | None = Field(None, description="Where the gateway reaches the engine.")
    adapters: list[str] = Field(default_factory=list, description="Adapters loaded on this engine (replica).")
    cores: str | None = Field(
        None, description="CPU cores a managed CPU engine is bound to (VLLM_CPU_OMP_THREADS_BIND); None: remote, GPU."
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ShadowStartRequest(BaseModel):
    """`POST /admin/shadows/{route}`: copy `percent` % of the route's sticky keys to `candidate`."""

    candidate: str = Field(min_length=1, description="The version to shadow (served name or registry tag).")
    percent: float = Field(gt=0, le=100, description="Share of the route's sticky keys mirrored, in (0, 100].")
    max_in_flight: int | None = Field(None, ge=1, description="Copies in flight at most (shadow.max_in_flight).")
    duration_s: float | None = Field(None, gt=0, description="Stop by itself after this long; unset: until stopped.")


class ShadowStatus(BaseModel):
    """A shadow run and its comparison so far (ratios are candidate / primary)."""

    route: str
    primary: str
    candidate: str
    percent: float
    max_in_flight: int
    duration_s: float | None
    started_at: float
    ends_at: float | None
    stopped_at: float | None
    state: Literal["running", "finished"]
    mirrored: int
    dropped: dict[str, int]
    in_flight: int
    candidate_errors: int
    comparison: dict[str, float | int | None]
    report: str | None = Field(None, description="The run's report.html, once finished.")


class CapacityKnee(BaseModel):
    """The goodput-optimal load a version sustains within its SLO (`servekit capacity`)."""

    concurrency: int = Field(ge=1, description="Closed-loop users at the knee: the in-flight requests it sustains.")
    request_rate: float = Field(description="Successful requests/s at the knee.")
    goodput_rate: float = Field(description="Requests/s at the knee that met every per-request SLO clause.")
    ttft_p95: float | None = None
    itl_p95: float | None = None
    max_arrival_rate: float | None = Field(None, description="Highest open-loop arrival rate (req/s) that met the SLO.")


class CapacityPoint(BaseModel):
    """One measured load level of a capacity sweep."""

    mode: Literal["closed", "open"]
    concurrency: int
    offered_rate: float | None = None
    requests: int
    request_rate: float
    goodput_rate: float
    error_rate: float
    ttft_p95: float | None = None
    itl_p95: float | None = None
    latency_p95: float | None = None
    breaches: list[str] = Field(default_factory=list)
    meets_slo: bool


class CapacityProfile(BaseModel):
    """What a version sustains within an SLO, measured on one machine: profile.json, stored with the version."""

    schema_version: int
    version: str
    created_at: str
    slo: list[str]
    run: dict[str, Any] = Field(default_factory=dict, description="How each point was loaded (tokens, duration).")
    engine: dict[str, Any] = Field(default_factory=dict, description="The engine as the server reported it.")
    machine: dict[str, Any] = Field(default_factory=dict)
    knee: CapacityKnee | None = Field(None, description="None: no measured load met the SLO.")
    curve: list[CapacityPoint]


ModelCard.model_rebuild()  # `capacity` names a model defined further down
