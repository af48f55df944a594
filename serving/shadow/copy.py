"""Sending one copy to the candidate's engine: the pipeline's `send` for `Shadower.mirror`, built from the request
it already forwarded, so the copy asks exactly what the primary was asked (under the candidate's engine name)."""

from __future__ import annotations

import json
import time
from typing import Any

from serving.backends.base import Backend, Endpoint
from serving.errors import OverloadedError, ServekitError
from serving.shadow.answer import AnswerAccumulator, RelayedAnswer


async def send_copy(
    backend: Backend, endpoint: Endpoint, payload: dict[str, Any], engine_model: str, temperature: float | None
) -> RelayedAnswer:
    """The candidate's answer to `payload` (the body forwarded to the primary's engine), parsed later by the
    Shadower. An engine error becomes an answer with its status; anything else is left to the Shadower, which counts
    it as a failed copy."""
    started = time.monotonic()
    body = {**payload, "model": engine_model}
    stream = bool(body.get("stream"))
    answer = AnswerAccumulator(stream, temperature, started)
    try:
        if stream:
            chunks = await backend.open_stream(endpoint, body)
            try:
                async for block in chunks.raw():  # bytes as they came: parsed later, off the request path
                    answer.feed(block)
            finally:
                await chunks.aclose()
        else:
            answer.feed_event(json.dumps(await backend.complete(endpoint, body)).encode())
    except OverloadedError:
        raise  # no room for a copy: the Shadower counts it as shed
    except ServekitError as error:
        return answer.answer(error.status_code, error=error.code or type(error).__name__)
    return answer.answer(200)
