"""A copy sent to a (fake) candidate engine, streamed and whole, and a candidate engine that refuses it."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.backends.base import Endpoint
from serving.errors import EngineUnavailableError
from serving.shadow.copy import send_copy
from tests.serving.fake_engine import FakeEngine

PAYLOAD = {"model": "primary-engine", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def engine() -> FakeEngine:
    return FakeEngine("candidate", asyncio.Event())


async def test_a_streamed_copy_is_answered_under_the_candidates_name():
    candidate = engine()
    relayed = await send_copy(candidate, "chat/completions", {**PAYLOAD, "stream": True}, "cand-engine", 0.0)
    answer = relayed.parse()
    assert (answer.status, answer.text, answer.temperature) == (200, "hi", 0.0) and answer.ttft_s is not None
    assert candidate.payloads[0]["model"] == "cand-engine" and candidate.payloads[0]["messages"] == PAYLOAD["messages"]


async def test_a_whole_copy_and_an_engine_that_refuses():
    answer = (await send_copy(engine(), "chat/completions", PAYLOAD, "cand-engine", 0.0)).parse()
    assert (answer.status, answer.text, answer.ttft_s) == (200, "hi", None)

    class Down(FakeEngine):
        async def complete(self, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
            raise EngineUnavailableError("candidate down")

    refused = await send_copy(Down("down", asyncio.Event()), "chat/completions", PAYLOAD, "cand-engine", 0.0)
    assert (refused.ok, refused.status, refused.parse().text) == (False, 503, "")
