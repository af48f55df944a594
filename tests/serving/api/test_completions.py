"""The parts of serving one completion that need no engine: who a request sticks to, what an outcome says about
the engine, and the stream relay (bytes through, usage parsed, release and stats on every ending). Whole
requests through the real engine: test_openai_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from serving.api import completions
from serving.api.auth import ANONYMOUS, Principal
from serving.api.completions import CLIENT_CLOSED_REQUEST, engine_outcome, sticky_key
from serving.api.ratelimit import RateLimiter
from serving.errors import EngineUnavailableError, OverloadedError
from serving.gateway import Gateway
from serving.metrics.stats import RequestStats
from serving.protocol import ChatCompletionRequest
from serving.router.router import Router
from serving.state import connect
from tests.serving.fake_engine import ROLE_CHUNK as ROLE
from tests.serving.fake_engine import TOKEN_CHUNK as TOKEN
from tests.serving.fake_engine import USAGE_CHUNK as USAGE
from tests.serving.fake_engine import ListedChunks, served_version


def request(headers: dict[str, str] | None = None) -> Request:
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": raw})


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="chat", messages=[{"role": "user", "content": "hi"}], **fields)


def test_a_request_sticks_to_its_user_then_the_header_then_the_api_key():
    keyed = Principal("team-a", "user")
    assert sticky_key(request({"x-servekit-user": "h"}), keyed, chat(user="u")) == "u"
    assert sticky_key(request({"x-servekit-user": "h"}), keyed, chat()) == "h"
    assert sticky_key(request(), keyed, chat()) == "team-a"
    assert sticky_key(request(), ANONYMOUS, chat()) is None


def test_only_the_engines_own_failures_count_against_it():
    assert engine_outcome(200) is True
    assert engine_outcome(400) is True  # the engine answered; the request was bad
    assert engine_outcome(503) is False
    assert engine_outcome(CLIENT_CLOSED_REQUEST) is None
    assert engine_outcome(503, OverloadedError("full")) is None  # shed by the gateway, the engine never saw it


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    gateway = Gateway([served_version("chat")], 16, Router(connect(tmp_path / "s.db"), {}))
    gateway.recorded = []
    gateway.record = gateway.recorded.append
    return gateway


async def relay(
    gateway: Gateway, stream: ListedChunks, keep_usage: bool, stop_after: int | None = None, responses: bool = False
) -> list[bytes]:
    served = gateway.versions["chat"]
    engine = gateway.admit(served)
    stats = RequestStats(route="chat", stream=True)
    events = completions.ResponseEvents(stats) if responses else completions.CompletionEvents(stats, keep_usage)
    sent = completions._relay(stream, events, gateway, (served, engine), (RateLimiter({}), None))
    out = []
    async for piece in sent:
        out.append(piece)
        if len(out) == stop_after:
            await sent.aclose()  # what the server does when the client goes away
            break
    return out


async def test_a_stream_is_relayed_as_the_engines_bytes_with_usage_only_when_asked(gateway):
    stream = ListedChunks(ROLE, TOKEN, TOKEN, USAGE)
    sent = await relay(gateway, stream, keep_usage=False)
    assert sent == [b"data: " + ROLE + b"\n\n", *[b"data: " + TOKEN + b"\n\n"] * 2, b"data: [DONE]\n\n"]
    (stats,) = gateway.recorded
    assert (stats.status, stats.prompt_tokens, stats.completion_tokens) == (200, 7, 1)
    assert stats.first_token_at is not None and len(stats.inter_token_latencies) == 1  # the role chunk is no token
    assert stream.closed and gateway.in_flight["chat"] == 0
    assert (await relay(gateway, ListedChunks(TOKEN, USAGE), keep_usage=True))[-2] == b"data: " + USAGE + b"\n\n"


async def test_an_engine_failure_mid_stream_ends_it_with_an_openai_error_event(gateway):
    stream = ListedChunks(TOKEN, fail=EngineUnavailableError("engine connection lost mid-stream"))
    sent = await relay(gateway, stream, keep_usage=False)
    assert sent[0] == b"data: " + TOKEN + b"\n\n"
    assert sent[1].startswith(b'data: {"error": {"message": "engine connection lost mid-stream"')
    assert b"[DONE]" not in b"".join(sent)
    assert gateway.recorded[0].status == 503 and stream.closed and gateway.in_flight["chat"] == 0


async def test_a_client_that_leaves_closes_the_engine_stream_and_is_counted_as_499(gateway):
    stream = ListedChunks(TOKEN, TOKEN, TOKEN, USAGE)
    await relay(gateway, stream, keep_usage=False, stop_after=1)
    assert stream.closed and gateway.in_flight["chat"] == 0
    assert gateway.recorded[0].status == CLIENT_CLOSED_REQUEST


RESPONSE_EVENTS = (
    b'{"response":{"id":"resp_1","status":"in_progress","usage":null},"sequence_number":0,"type":"response.created"}',
    b'{"content_index":0,"delta":"Hi","item_id":"msg_1","sequence_number":1,"type":"response.output_text.delta"}',
    b'{"content_index":0,"delta":"!","item_id":"msg_1","sequence_number":2,"type":"response.output_text.delta"}',
    b'{"response":{"id":"resp_1","status":"completed","usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11}}'
    b',"sequence_number":3,"type":"response.completed"}',
)


async def test_a_responses_stream_is_relayed_as_named_events_with_its_usage_counted_and_no_done(gateway):
    sent = await relay(gateway, ListedChunks(*RESPONSE_EVENTS), keep_usage=False, responses=True)
    names = [b"response.created", *[b"response.output_text.delta"] * 2, b"response.completed"]
    framed = zip(names, RESPONSE_EVENTS, strict=True)
    assert sent == [b"event: " + name + b"\ndata: " + data + b"\n\n" for name, data in framed]
    (stats,) = gateway.recorded
    assert (stats.status, stats.prompt_tokens, stats.completion_tokens) == (200, 9, 2)
    assert stats.first_token_at is not None and len(stats.inter_token_latencies) == 1


async def test_a_responses_stream_that_fails_ends_with_an_error_event_in_openai_shape(gateway):
    stream = ListedChunks(RESPONSE_EVENTS[0], fail=EngineUnavailableError("engine connection lost mid-stream"))
    sent = await relay(gateway, stream, keep_usage=False, responses=True)
    assert sent[1].startswith(b'event: error\ndata: {"error": {"message": "engine connection lost mid-stream"')
    assert gateway.recorded[0].status == 503 and stream.closed
