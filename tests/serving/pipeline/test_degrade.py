"""The degradation ladder's logic against a hand-moved clock and hand-set signals, and its treatments through the
pipeline against in-memory engines (a real overload on the real engine: test_degrade_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from serving.errors import OverloadedError
from serving.gateway import Gateway
from serving.pipeline.degrade import Degrader, Ladder
from serving.pipeline.dispatch import Call, Pipeline
from serving.pipeline.principal import ANONYMOUS, Principal
from serving.pipeline.signals import RouteSignals
from serving.protocol import ChatCompletionRequest, ResponsesRequest
from serving.settings import AccessLogSettings, DegradeStep, Settings, ShadowSettings
from serving.shadow.session import Shadower
from tests.serving.fake_engine import started_gateway

CAP = DegradeStep(action="cap_tokens", signal="in_flight", over=4, enter_s=2, exit_s=5, max_tokens=16)
FALLBACK = DegradeStep(action="fallback", signal="in_flight", over=8, enter_s=2, exit_s=5, to="small", share=1.0)
SHED_LOW = DegradeStep(action="shed_priority", signal="in_flight", over=12, enter_s=0, below_priority=5)
SHED_ALL = DegradeStep(action="shed_all", signal="waiting", over=20, enter_s=0)


def test_a_ladder_climbs_one_step_per_held_signal_and_comes_down_with_hysteresis():
    ladder = Ladder("chat", [CAP, FALLBACK])
    ladder.update({"in_flight": 10}, now=0)
    ladder.update({"in_flight": 10}, now=1)
    assert ladder.level == 0, "over its level for 1 s of the 2 it must hold"
    ladder.update({"in_flight": 10}, now=2)
    assert ladder.level == 1
    ladder.update({"in_flight": 10}, now=3)
    ladder.update({"in_flight": 10}, now=5)
    assert [s.action for s in ladder.active] == ["cap_tokens", "fallback"]
    ladder.update({"in_flight": 7}, now=6)  # under 8 but over 8 x 0.8: the fallback step holds
    ladder.update({"in_flight": 7}, now=20)
    assert ladder.level == 2
    ladder.update({"in_flight": 1}, now=21)
    ladder.update({"in_flight": 1}, now=25)
    assert ladder.level == 2, "under its exit level for 4 s of the 5 it must stay"
    ladder.update({"in_flight": 1}, now=26)
    assert ladder.level == 1, "one step down at a time"
    ladder.update({"in_flight": 5}, now=27)  # back over the cap's exit level (3.2): the cap step stays
    ladder.update({"in_flight": 5}, now=40)
    assert ladder.level == 1
    ladder.update({"in_flight": None}, now=41)  # not known: counts as under
    ladder.update({"in_flight": None}, now=46)
    assert ladder.level == 0


def test_a_step_needs_its_argument():
    with pytest.raises(ValidationError, match="needs `max_tokens`"):
        DegradeStep(action="cap_tokens", signal="in_flight", over=4)
    with pytest.raises(ValidationError, match="needs `to`"):
        DegradeStep(action="fallback", signal="in_flight", over=4)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = await started_gateway(tmp_path / "s.db", "chat", "small")
    yield gateway
    await gateway.stop()


def pipeline_with(gateway: Gateway, tmp_path: Path, steps: list[DegradeStep]) -> Pipeline:
    settings = Settings(access_log=AccessLogSettings(enabled=False), degrade={"chat": steps})
    return Pipeline(settings, gateway, Shadower(ShadowSettings(), tmp_path, CollectorRegistry()))


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields})


async def test_each_step_treats_new_requests_and_the_route_is_normal_again_once_it_left(gateway, tmp_path):
    pipeline = pipeline_with(gateway, tmp_path, [CAP, FALLBACK, SHED_LOW])
    ladder = pipeline.degrader.ladders["chat"]
    chat_engine = gateway.versions["chat"].supervisor.backend
    vip = Principal("vip", "user", priority=9)

    ladder.level = 1
    answer = await pipeline.serve(Call("chat/completions", chat(max_tokens=100), ANONYMOUS, "r1"))
    assert answer.headers["x-servekit-degraded"] == "cap_tokens" and chat_engine.payloads[-1]["max_tokens"] == 16
    answer = await pipeline.serve(Call("chat/completions", chat(max_tokens=8), ANONYMOUS, "r2"))
    assert "x-servekit-degraded" not in answer.headers, "a smaller max_tokens than the cap is left alone"

    ladder.level = 2
    answer = await pipeline.serve(Call("chat/completions", chat(), ANONYMOUS, "r3"))
    assert answer.headers["x-servekit-version"] == "small:v1"
    assert answer.headers["x-servekit-degraded"] == "fallback,cap_tokens"

    ladder.level = 3
    with pytest.raises(OverloadedError) as shed:
        await pipeline.serve(Call("chat/completions", chat(), ANONYMOUS, "r4"))
    assert shed.value.retry_after_s and "priority 5" in shed.value.message
    assert (await pipeline.serve(Call("chat/completions", chat(), vip, "r5"))).body is not None

    ladder.level = 0
    answer = await pipeline.serve(Call("chat/completions", chat(max_tokens=100), ANONYMOUS, "r6"))
    assert answer.headers["x-servekit-version"] == "chat:v1" and "x-servekit-degraded" not in answer.headers
    assert chat_engine.payloads[-1]["max_tokens"] == 100


async def test_shed_all_refuses_everyone_and_the_gauge_follows_the_ladder(gateway, tmp_path):
    signals = {"waiting": 50.0}

    async def read(route: str) -> dict[str, float | None]:
        return signals

    registry = CollectorRegistry()
    degrader = Degrader({"chat": [SHED_ALL]}, read, registry)
    await degrader.tick(now=0)
    assert registry.get_sample_value("servekit_degradation_step", {"route": "chat"}) == 1
    with pytest.raises(OverloadedError):
        degrader.apply(chat(), Principal("vip", "user", priority=99), gateway.versions["chat"], gateway.versions)
    assert degrader.status() == {"chat": {"step": 1, "active": ["shed_all"]}}
    signals["waiting"] = 0.0
    await degrader.tick(now=10)
    await degrader.tick(now=15)  # under its exit level for exit_s
    assert registry.get_sample_value("servekit_degradation_step", {"route": "chat"}) == 0


async def test_the_in_flight_signal_counts_the_routes_engines(gateway):
    gateway.engines.admit(gateway.versions["chat"])
    gateway.engines.admit(gateway.versions["chat"])
    gateway.engines.admit(gateway.versions["small"])
    signals = RouteSignals(gateway, {"chat": {"in_flight"}, "small": {"in_flight", "ttft_p95_s"}})
    assert await signals("chat") == {"in_flight": 2.0}
    assert await signals("small") == {"in_flight": 1.0, "ttft_p95_s": None}


def test_capping_keeps_a_smaller_budget_and_lowers_every_field_that_sets_one():
    body = chat(max_completion_tokens=200)
    assert body.cap_output(16) and body.output_budget == 16
    assert not chat(max_tokens=8).cap_output(16)
    responses = ResponsesRequest(model="chat", input="hi")
    assert responses.cap_output(16) and responses.max_output_tokens == 16
