"""One answer to a request (the primary's or the candidate's copy), and the accumulator that rebuilds it from the
bytes relayed to the client: filled only for mirrored requests, parsed once after the client has its answer."""

from __future__ import annotations

import json
import time
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


class AnswerAccumulator:
    """Collects a response's bytes as relayed (`feed` only appends: it sits on the relay's path) and parses them
    when asked for the answer: an SSE stream of chat or text completion chunks, or one JSON body. Only the first
    choice is kept; `token_ids` come from vLLM's `return_token_ids`, when the request asked for them."""

    def __init__(self, stream: bool, temperature: float | None, started: float | None = None) -> None:
        self.stream = stream
        self.temperature = temperature
        self.started = time.monotonic() if started is None else started
        self.first_chunk_at: float | None = None
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
        self._chunks.append(chunk)

    def answer(self, status: int, *, ttft_s: float | None = None, error: str | None = None) -> Answer:
        """The answer so far; `ttft_s` overrides the time to the first fed chunk (the pipeline's own measure)."""
        latency = time.monotonic() - self.started
        if ttft_s is None and self.first_chunk_at is not None and self.stream:
            ttft_s = self.first_chunk_at - self.started
        body = b"".join(self._chunks)
        text, ids = _parse_stream(body) if self.stream else _parse_body(body)
        return Answer(status, latency, ttft_s, text, ids, self.temperature, error)


def _first_choice(document: Any) -> dict[str, Any] | None:
    choices = document.get("choices") if isinstance(document, dict) else None
    return next((c for c in choices or () if isinstance(c, dict) and c.get("index", 0) == 0), None)


def _choice_text(choice: dict[str, Any]) -> str:
    part = choice.get("delta") or choice.get("message")
    content = part.get("content") if isinstance(part, dict) else choice.get("text")
    return content if isinstance(content, str) else ""


def _parse_body(body: bytes) -> tuple[str, list[int] | None]:
    try:
        choice = _first_choice(json.loads(body))
    except ValueError:
        return "", None
    if choice is None:
        return "", None
    ids = choice.get("token_ids")
    return _choice_text(choice), list(ids) if isinstance(ids, list) else None


def _parse_stream(body: bytes) -> tuple[str, list[int] | None]:
    texts: list[str] = []
    ids: list[int] | None = None
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            continue
        try:
            choice = _first_choice(json.loads(data))
        except ValueError:
            continue
        if choice is None:
            continue
        texts.append(_choice_text(choice))
        if isinstance(choice.get("token_ids"), list):
            ids = [*(ids or []), *choice["token_ids"]]
    return "".join(texts), ids
