"""One answer to a request (the primary's or the candidate's copy), and the accumulator that rebuilds it from the
bytes relayed to the client: filled only for mirrored requests, parsed once after the client has its answer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """`status` 0: no HTTP answer at all (connection failed, timed out)."""

    status: int
    latency_s: float
    ttft_s: float | None = None
    text: str = ""
    token_ids: list[int] | None = None
    temperature: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class RelayedAnswer:
    """An answer whose body is kept as relayed: it is parsed by `parse`, in the comparison's worker thread, so the
    request that produced it spends nothing on it."""

    status: int
    latency_s: float
    ttft_s: float | None
    temperature: float | None
    error: str | None
    stream: bool
    body: bytes
    events: tuple[bytes, ...] = ()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def parse(self) -> Answer:
        if self.stream:
            text, ids = _parse_events([*_sse_data(self.body), *self.events])
        else:
            text, ids = _parse_body(self.body or b"".join(self.events))
        return Answer(self.status, self.latency_s, self.ttft_s, text, ids, self.temperature, self.error)


AnyAnswer = Answer | RelayedAnswer


def parsed(answer: AnyAnswer) -> Answer:
    return answer.parse() if isinstance(answer, RelayedAnswer) else answer


class AnswerAccumulator:
    """Collects a response as relayed and parses it only when asked for the answer: `feed` takes the bytes sent
    to the client (SSE frames, or one JSON body), `feed_event` one engine chunk's JSON payload (what a
    `ChunkStream` yields). Both only append: they sit on the relay's path. Chat and text completions (the first
    choice) and Responses API text are understood; `token_ids` come from vLLM's `return_token_ids`."""

    def __init__(self, stream: bool, temperature: float | None, started: float | None = None) -> None:
        self.stream = stream
        self.temperature = temperature
        self.started = time.monotonic() if started is None else started
        self.first_chunk_at: float | None = None
        self.on_first: Callable[[], None] | None = None
        """Called with the first chunk fed (the Shadower sends the copy then)."""
        self._chunks: list[bytes] = []
        self._events: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self.first_chunk_at is None:
            self._first()
        self._chunks.append(chunk)

    def feed_event(self, payload: bytes) -> None:
        """One SSE event's data (a JSON document, no `data:` framing)."""
        if self.first_chunk_at is None:
            self._first()
        self._events.append(payload)

    def _first(self) -> None:
        self.first_chunk_at = time.monotonic()
        if self.on_first is not None:
            self.on_first()

    def answer(self, status: int, *, ttft_s: float | None = None, error: str | None = None) -> RelayedAnswer:
        """The answer so far, unparsed; `ttft_s` overrides the time to the first fed chunk (the pipeline's own)."""
        latency = time.monotonic() - self.started
        if ttft_s is None and self.first_chunk_at is not None and self.stream:
            ttft_s = self.first_chunk_at - self.started
        body = b"".join(self._chunks)
        return RelayedAnswer(status, latency, ttft_s, self.temperature, error, self.stream, body, tuple(self._events))


def _first_choice(document: Any) -> dict[str, Any] | None:
    choices = document.get("choices") if isinstance(document, dict) else None
    return next((c for c in choices or () if isinstance(c, dict) and c.get("index", 0) == 0), None)


def _choice_text(choice: dict[str, Any]) -> str:
    part = choice.get("delta") or choice.get("message")
    content = part.get("content") if isinstance(part, dict) else choice.get("text")
    return content if isinstance(content, str) else ""


def _response_text(document: dict[str, Any]) -> str:
    """A whole Responses API body: the text parts of its output messages."""
    return "".join(
        part.get("text", "")
        for item in document.get("output") or ()
        if isinstance(item, dict)
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") == "output_text"
    )


def _parse_body(body: bytes) -> tuple[str, list[int] | None]:
    try:
        document = json.loads(body)
    except ValueError:
        return "", None
    choice = _first_choice(document)
    if choice is None:
        return (_response_text(document), None) if isinstance(document, dict) else ("", None)
    ids = choice.get("token_ids")
    return _choice_text(choice), list(ids) if isinstance(ids, list) else None


def _sse_data(body: bytes) -> list[bytes]:
    return [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]


def _documents(events: list[bytes]) -> list[Any]:
    """Every event's JSON: one `json.loads` of them all as an array (a tenth of the time of one call per event),
    else one by one, skipping what is not JSON (`[DONE]`, a frame cut short)."""
    documents = [data for data in events if data != b"[DONE]"]
    try:
        return json.loads(b"[" + b",".join(documents) + b"]")
    except ValueError:
        pass
    kept = []
    for data in documents:
        try:
            kept.append(json.loads(data))
        except ValueError:
            continue
    return kept


def _parse_events(events: list[bytes]) -> tuple[str, list[int] | None]:
    texts: list[str] = []
    ids: list[int] | None = None
    for document in _documents(events):
        if isinstance(document, dict) and document.get("type") == "response.output_text.delta":
            texts.append(str(document.get("delta", "")))
            continue
        choice = _first_choice(document)
        if choice is None:
            continue
        texts.append(_choice_text(choice))
        if isinstance(choice.get("token_ids"), list):
            ids = [*(ids or []), *choice["token_ids"]]
    return "".join(texts), ids
