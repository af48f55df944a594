"""A request's life through the pipeline against an in-memory engine: the stream relay (bytes through, usage
parsed), and everything a request takes given back on every ending (its in-flight slot, its rate-limit charge,
the engine's stream), recorded once. Whole requests through the real engine: test_openai_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from serving.api.app import create_app
from serving.backends.base import Endpoint
from serving.errors import EngineUnavailableError, RateLimitError
from serving.gateway import Gateway
from serving.metrics.stats import RequestStats
from serving.pipeline.choice import CLIENT_CLOSED_REQUEST
from serving.pipeline.dispatch import Answer, Call, Held, Pipeline
from serving.pipeline.limiter import InProcessRateLimiter
from serving.pipeline.principal import ANONYMOUS, Principal
from serving.pipeline.ratelimit import RateLimiter
from serving.protocol import ChatCompletionRequest, ResponsesRequest
from serving.router.router import embedded_router
from serving.router.routes import Route, RouteMember
from serving.settings import AccessLogSettings, PoolSettings, Settings, ShadowSettings
from serving.shadow.session import Shadower
from serving.state import connect
from serving.versions import LoraCapacity
from tests.serving.fake_engine import ROLE_CHUNK as ROLE
from tests.serving.fake_engine import TOKEN_CHUNK as TOKEN
from tests.serving.fake_engine import USAGE_CHUNK as USAGE
from tests.serving.fake_engine import ListedChunks, adapter_of, served_version, started_gateway

RESPONSE_EVENTS = (
    b'{"response":{"id":"resp_1","status":"in_progress","usage":null},"sequence_number":0,"type":"response.created"}',
    b'{"content_index":0,"delta":"Hi","item_id":"msg_1","sequence_number":1,"type":"response.output_text.delta"}',
    b'{"content_index":0,"delta":"!","item_id":"msg_1","sequence_number":2,"type":"response.output_text.delta"}',
    b'{"response":{"id":"resp_1","status":"completed","usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11}}'
    b',"sequence_number":3,"type":"response.completed"}',
)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = await started_gateway(tmp_path / "s.db", "chat", "candidate")
    yield gateway
    await gateway.stop()


@pytest.fixture
def pipeline(gateway: Gateway, tmp_path: Path) -> Pipeline:
    shadows = Shadower(ShadowSettings(), tmp_path / "shadows", gateway.metrics.registry)
    pipeline = Pipeline(Settings(access_log=AccessLogSettings(enabled=False)), gateway, shadows)
    pipeline.recorded: list[RequestStats] = []
    pipeline.record = pipeline.recorded.append
    return pipeline


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields})


def call(body: ChatCompletionRequest | ResponsesRequest, principal: Principal = ANONYMOUS) -> Call:
    endpoint: Endpoint = "responses" if isinstance(body, ResponsesRequest) else "chat/completions"
    return Call(endpoint, body, principal, "req-1")


async def streamed(
    pipeline: Pipeline, *chunks: bytes, fail: Exception | None = None, stop_after: int | None = None, **fields
) -> tuple[list[bytes], ListedChunks]:
    engine = pipeline.gateway.versions["chat"].supervisor.backend
    stream = ListedChunks(*chunks, fail=fail)
    engine.streams.append(stream)
    body = ResponsesRequest(model="chat", input="hi", stream=True) if fields.pop("responses", False) else None
    answer = await pipeline.serve(call(body or chat(stream=True, **fields)))
    assert answer.stream is not None and answer.headers["x-servekit-version"] == "chat:v1"
    sent = []
    async for piece in answer.stream:
        sent.append(piece)
        if len(sent) == stop_after:
            await answer.stream.aclose()  # what the server does when the client goes away
            break
    return sent, stream


async def test_a_stream_is_relayed_as_the_engines_bytes_with_usage_only_when_asked(pipeline, gateway):
    sent, stream = await streamed(pipeline, ROLE, TOKEN, TOKEN, USAGE)
    assert sent == [b"data: " + ROLE + b"\n\n", *[b"data: " + TOKEN + b"\n\n"] * 2, b"data: [DONE]\n\n"]
    (stats,) = pipeline.recorded
    assert (stats.status, stats.prompt_tokens, stats.completion_tokens) == (200, 7, 1)
    assert stats.first_token_at is not None and len(stats.inter_token_latencies) == 1  # the role chunk is no token
    assert stream.closed and gateway.engines.in_flight["chat"] == 0
    kept, _ = await streamed(pipeline, TOKEN, USAGE, stream_options={"include_usage": True})
    assert kept[-2] == b"data: " + USAGE + b"\n\n"


async def test_an_engine_failure_mid_stream_ends_it_with_an_openai_error_event(pipeline, gateway):
    sent, stream = await streamed(pipeline, TOKEN, fail=EngineUnavailableError("engine connection lost mid-stream"))
    assert sent[0] == b"data: " + TOKEN + b"\n\n"
    assert sent[1].startswith(b'data: {"error": {"message": "engine connection lost mid-stream"')
    assert b"[DONE]" not in b"".join(sent)
    assert pipeline.recorded[0].status == 503 and stream.closed and gateway.engines.in_flight["chat"] == 0


async def test_a_client_that_leaves_closes_the_engine_stream_and_is_counted_as_499(pipeline, gateway):
    _, stream = await streamed(pipeline, TOKEN, TOKEN, TOKEN, USAGE, stop_after=1)
    assert stream.closed and gateway.engines.in_flight["chat"] == 0
    assert pipeline.recorded[0].status == CLIENT_CLOSED_REQUEST


async def test_a_stream_never_started_still_gives_back_its_slot_and_engine_stream_once(pipeline, gateway):
    stream = ListedChunks(TOKEN, USAGE)
    gateway.versions["chat"].supervisor.backend.streams.append(stream)
    answer = await pipeline.serve(call(chat(stream=True)))
    assert gateway.engines.in_flight["chat"] == 1
    assert answer.close is not None
    await answer.close()  # the response ended before its first byte (the client left)
    await answer.close()
    assert stream.closed and gateway.engines.in_flight["chat"] == 0
    assert [stats.status for stats in pipeline.recorded] == [CLIENT_CLOSED_REQUEST]


async def test_a_responses_stream_is_relayed_as_named_events_with_its_usage_counted_and_no_done(pipeline):
    sent, _ = await streamed(pipeline, *RESPONSE_EVENTS, responses=True)
    names = [b"response.created", *[b"response.output_text.delta"] * 2, b"response.completed"]
    framed = zip(names, RESPONSE_EVENTS, strict=True)
    assert sent == [b"event: " + name + b"\ndata: " + data + b"\n\n" for name, data in framed]
    (stats,) = pipeline.recorded
    assert (stats.status, stats.prompt_tokens, stats.completion_tokens) == (200, 9, 2)
    assert stats.first_token_at is not None and len(stats.inter_token_latencies) == 1


async def test_a_responses_stream_that_fails_ends_with_an_error_event_in_openai_shape(pipeline):
    failure = EngineUnavailableError("engine connection lost mid-stream")
    sent, stream = await streamed(pipeline, RESPONSE_EVENTS[0], fail=failure, responses=True)
    assert sent[1].startswith(b'event: error\ndata: {"error": {"message": "engine connection lost mid-stream"')
    assert pipeline.recorded[0].status == 503 and stream.closed


async def test_a_json_answer_settles_the_rate_limit_charge_against_its_real_usage(pipeline, gateway):
    pipeline.limiter = InProcessRateLimiter(RateLimiter({"team": (0, 1000)}))
    body = chat(max_tokens=100)
    answer = await pipeline.serve(call(body, Principal("team", "user")))
    assert isinstance(answer, Answer) and answer.body is not None and answer.error is None
    charged = body.prompt_tokens_estimate() + 100  # up front: the estimate
    assert answer.headers["x-ratelimit-remaining-tokens"] == str(1000 - charged)
    assert pipeline.limiter.limiter._tokens["team"].remaining() == 1000 - 8  # settled: the usage's 8 tokens
    assert gateway.engines.in_flight["chat"] == 0 and pipeline.recorded[0].status == 200


async def test_an_engine_that_is_down_answers_503_and_its_charge_comes_back(pipeline, gateway):
    pipeline.limiter = InProcessRateLimiter(RateLimiter({"team": (0, 1000)}))
    await gateway.stop()
    answer = await pipeline.serve(call(chat(max_tokens=100), Principal("team", "user")))
    assert answer.error is not None and answer.error.status_code == 503
    assert pipeline.limiter.limiter._tokens["team"].remaining() == 1000
    assert gateway.engines.in_flight["chat"] == 0 and pipeline.recorded[0].status == 503


async def test_a_refused_rate_limit_takes_nothing_and_reaches_no_engine(pipeline, gateway):
    pipeline.limiter = InProcessRateLimiter(RateLimiter({"team": (1, 0)}))
    payloads = gateway.versions["chat"].supervisor.backend.payloads
    await pipeline.serve(call(chat(), Principal("team", "user")))
    reached = len(payloads)
    with pytest.raises(RateLimitError):
        await pipeline.serve(call(chat(), Principal("team", "user")))
    assert len(payloads) == reached
    assert gateway.engines.in_flight["chat"] == 0


async def test_held_gives_everything_back_newest_first_once_even_when_one_fails():
    given_back: list[str] = []

    async def stream_closed() -> None:
        given_back.append("stream")

    def slot_released() -> None:
        given_back.append("slot")
        raise RuntimeError("release failed")

    held = Held()
    held.add(lambda: given_back.append("charge"))
    held.add(slot_released)
    held.add(stream_closed)
    owner = held.hand_over()
    await held.close()
    assert given_back == [], "handed over: the old holder gives nothing back"
    with pytest.raises(RuntimeError, match="release failed"):
        await owner.close()
    await owner.close()
    assert given_back == ["stream", "slot", "charge"]


async def test_a_shadowed_request_answers_from_the_primary_and_sends_a_copy_to_the_candidate(pipeline, gateway):
    await gateway.set_route(Route(name="ab", members=[RouteMember(version="chat", weight=100)]))
    pipeline.shadows.start("ab", "chat", "candidate", percent=100, max_in_flight=4)
    candidate = gateway.versions["candidate"].supervisor.backend
    copies_before = len(candidate.payloads)
    answer = await pipeline.serve(Call("chat/completions", chat(model="ab"), ANONYMOUS, "req-shadow"))
    assert answer.headers["x-servekit-version"] == "chat:v1" and answer.body is not None
    async with asyncio.timeout(5):
        while pipeline.shadows.status("ab")["comparison"]["pairs"] < 1:
            await asyncio.sleep(0.01)
    assert len(candidate.payloads) == copies_before + 1 and candidate.payloads[-1]["model"] == "candidate"
    assert [stats.version for stats in pipeline.recorded] == ["chat:v1"], "the copy is not the client's request"
    assert gateway.engines.in_flight["candidate"] == 0 and gateway.engines.in_flight["chat"] == 0


async def test_a_candidate_that_is_down_never_touches_the_clients_answer(pipeline, gateway):
    await gateway.set_route(Route(name="ab", members=[RouteMember(version="chat", weight=100)]))
    pipeline.shadows.start("ab", "chat", "candidate", percent=100, max_in_flight=4)
    await gateway.versions["candidate"].supervisor.stop()
    sent, _ = await streamed(pipeline, ROLE, TOKEN, USAGE, model="ab")
    assert sent[-1] == b"data: [DONE]\n\n" and pipeline.recorded[-1].status == 200
    async with asyncio.timeout(5):
        while pipeline.shadows.status("ab")["candidate_errors"] < 1:
            await asyncio.sleep(0.01)


async def test_a_copy_to_an_adapter_candidate_goes_where_the_adapter_is_loaded_even_after_its_carrier_died(tmp_path):
    base = served_version("base", replicas=2)
    gateway = Gateway([base], embedded_router(connect(tmp_path / "a.db"), {}), lora=LoraCapacity(16),
                      pool=PoolSettings(adapter_replicas=1))  # fmt: skip
    gateway.start()
    for replica in base.replicas:
        await replica.wait_ready(5)
    try:
        pirate = adapter_of(base, "pirate")
        await gateway.engines.load_adapter(pirate)
        replicas = gateway.engines.pools["base"].replicas.values()
        (carrier,) = [replica for replica in replicas if replica.adapters]
        (other,) = [replica for replica in replicas if replica is not carrier]
        await carrier.supervisor.stop()  # the only replica carrying the adapter is gone
        pipeline = Pipeline(Settings(access_log=AccessLogSettings(enabled=False)), gateway,
                            Shadower(ShadowSettings(), tmp_path, CollectorRegistry()))  # fmt: skip
        await gateway.set_route(Route(name="ab", members=[RouteMember(version="base", weight=100)]))
        pipeline.shadows.start("ab", "base", pirate.name, percent=100, max_in_flight=4)
        assert (await pipeline.serve(Call("chat/completions", chat(model="ab"), ANONYMOUS, "req-copy"))).body
        async with asyncio.timeout(5):
            while pipeline.shadows.status("ab")["comparison"]["pairs"] < 1:
                await asyncio.sleep(0.01)
        assert pipeline.shadows.status("ab")["candidate_errors"] == 0
        engine = other.supervisor.backend
        assert engine.adapters == [pirate.engine_model], "loaded where the copy could go, as for a client's request"
        assert engine.payloads[-1]["model"] == pirate.engine_model
    finally:
        await gateway.stop()


async def test_a_pool_keeps_a_conversation_on_one_replica_and_fails_over_before_the_first_byte(tmp_path):
    pooled = served_version("pooled", replicas=2)
    gateway = Gateway([pooled], embedded_router(connect(tmp_path / "p.db"), {}), pool=PoolSettings(block_chars=16))
    gateway.start()
    for replica in pooled.replicas:
        await replica.wait_ready(5)
    try:
        pipeline = Pipeline(Settings(access_log=AccessLogSettings(enabled=False)), gateway,
                            Shadower(ShadowSettings(), tmp_path, CollectorRegistry()))  # fmt: skip
        engines = [replica.backend for replica in pooled.replicas]
        history = [{"role": "system", "content": "You are a pirate who answers in rhyme. " * 4}]
        for turn in range(4):
            history.append({"role": "user", "content": f"Question {turn}: where is the treasure?"})
            body = ChatCompletionRequest(model="pooled", messages=history, max_tokens=4)
            assert (await pipeline.serve(Call("chat/completions", body, ANONYMOUS, f"turn-{turn}"))).body is not None
            history.append({"role": "assistant", "content": "Arr!"})
        turns = [len(engine.payloads) - 1 for engine in engines]  # minus each replica's warm-up
        assert sorted(turns) == [0, 4], f"every turn of the conversation on one replica: {turns}"
        busy = turns.index(4)
        engines[busy].refuse = True  # that replica's engine is gone
        body = ChatCompletionRequest(model="pooled", messages=history, max_tokens=4)
        answer = await pipeline.serve(Call("chat/completions", body, ANONYMOUS, "after-failure"))
        assert answer.body is not None, "the request was tried again on the other replica"
        assert len(engines[1 - busy].payloads) == 2
        assert not gateway.engines.pools["pooled"].replicas[f"pooled/{busy}"].healthy
        assert gateway.engines.in_flight["pooled"] == 0
        failovers = gateway.metrics.registry.get_sample_value(
            "servekit_replica_choice_total", {"policy": "prefix_affinity", "reason": "failover"}
        )
        assert failovers == 1
        served_by = {  # the per-replica series: every turn on one replica, the retry on the other
            replica: gateway.metrics.registry.get_sample_value(
                "servekit_replica_requests_total", {"version": pooled.version, "replica": replica, "status": "200"}
            )
            for replica in ("pooled/0", "pooled/1")
        }
        assert served_by == {f"pooled/{busy}": 4, f"pooled/{1 - busy}": 1}
        in_flight = [
            gateway.metrics.registry.get_sample_value("servekit_replica_in_flight_requests", {"replica": replica})
            for replica in ("pooled/0", "pooled/1")
        ]
        assert in_flight == [0, 0]
    finally:
        await gateway.stop()


async def test_gateways_sharing_redis_admit_one_keys_limit_between_them(tmp_path, redis_server):
    """Three gateway replicas (each its own pipeline) on one real redis-server: a key limited to 6 requests a
    minute gets 6 answers in all, however its requests are spread."""
    key = {"id": "team", "sha256": "0" * 64, "requests_per_minute": 6}
    settings = Settings(
        access_log=AccessLogSettings(enabled=False), auth={"keys": [key]},
        state={"url": redis_server.url, "timeout_s": 5.0},
    )  # fmt: skip
    gateways = [await started_gateway(tmp_path / f"replica-{n}.db", "chat", state=settings.state) for n in range(3)]
    apps = [create_app(settings, gateway) for gateway in gateways]
    pipelines = [app.state.pipeline for app in apps]
    try:
        team = Principal("team", "user")
        answers = []
        for n in range(12):
            try:
                answers.append(await pipelines[n % 3].serve(Call("chat/completions", chat(), team, f"r{n}")))
            except RateLimitError:
                answers.append(None)
        assert sum(answer is not None for answer in answers) == 6
    finally:
        for app, gateway in zip(apps, gateways, strict=True):
            await app.state.shared.close()
            await gateway.stop()
