from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtest.gate import run_gate
from serving.backends.ports import free_port_block
from serving.errors import InvalidRequestError
from serving.rollout.gates import LoadTestGate, LoadTestGateSpec, ShadowGate, WebhookGate
from serving.rollout.policy import RolloutConfig, RolloutState

STATE = RolloutState(route="chat", primary="base", canary="new", config=RolloutConfig(), ticks=3)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict], list[int]]]:
    """A real HTTP endpoint: records each JSON body, answers with the next status from `statuses`."""
    received: list[dict] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(statuses.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/gate", received, statuses
    server.shutdown()


def test_a_2xx_passes_anything_else_fails_and_the_hook_gets_the_state(webhook):
    url, received, statuses = webhook
    statuses += [204, 500]
    passed = asyncio.run(WebhookGate(url).check(STATE, "step"))
    failed = asyncio.run(WebhookGate(url).check(STATE, "pre-rollout"))
    assert (passed.passed, failed.passed) == (True, False)
    assert "answered 500" in failed.detail
    assert received[0]["stage"] == "step" and received[0]["canary"] == "new" and received[0]["ticks"] == 3
    assert received[1]["stage"] == "pre-rollout"


def test_an_unreachable_webhook_fails_the_gate_with_the_reason():
    url = f"http://127.0.0.1:{free_port_block()}/gate"  # nothing listens there
    result = asyncio.run(WebhookGate(url, timeout_s=5).check(STATE, "step"))
    assert not result.passed and "unreachable" in result.detail


def test_a_load_test_gate_passes_the_stages_it_is_not_configured_for_without_running(tmp_path):
    spec = LoadTestGateSpec(url="http://127.0.0.1:1", slo="error_rate<0.01", stages=["pre-rollout"])
    result = asyncio.run(LoadTestGate(spec, tmp_path, run_gate).check(STATE, "step"))  # a run would fail: port 1
    assert result.passed and "not configured for step" in result.detail
    assert not any(tmp_path.iterdir())


RUN = {"candidate": "new", "report": "/r/report.html"}


def shadow_run(**comparison: float | None) -> dict:
    return {**RUN, "comparison": {"agreement": 0.95, "error_rate": 0.0, "ttft_p95_ratio": 1.1, **comparison}}


def test_shadow_requirements_are_parsed_and_bad_ones_refused_naming_the_param():
    gate = ShadowGate(" agreement>=0.9, ttft_p95_ratio<=1.25,error_rate<0.01", None)
    assert [str(r) for r in gate.requirements] == ["agreement>=0.9", "ttft_p95_ratio<=1.25", "error_rate<0.01"]
    for bad in ("agreement=>0.9", "speed>=2", "agreement>=x", ""):
        with pytest.raises(InvalidRequestError) as refused:
            ShadowGate(bad, None)
        assert refused.value.param == "require_shadow"


def test_the_shadow_gate_lists_every_breached_line():
    gate = ShadowGate("agreement>=0.9,ttft_p95_ratio<=1.25,error_rate<=0.01", None)
    gate.last_run = shadow_run(agreement=0.5, error_rate=0.2)
    assert gate.breaches("new") == [
        "agreement = 0.5 (required agreement>=0.9)", "error_rate = 0.2 (required error_rate<=0.01)"
    ]  # fmt: skip
    gate.last_run = shadow_run(agreement=None)
    assert gate.breaches("new") == ["agreement: no data (required agreement>=0.9)"]
    assert gate.breaches("other") == ["the last shadow run was of `new`, not of `other`"]
    gate.last_run = None
    assert gate.breaches("new") == ["no shadow run on this route"]
    gate.last_run = shadow_run()
    assert gate.breaches("new") == []


async def test_the_shadow_gate_verdict_carries_the_run_it_relied_on():
    state = RolloutState(route="r", primary="old", canary="new", config=RolloutConfig())
    passed = await ShadowGate("agreement>=0.9", shadow_run()).check(state, "pre-rollout")
    assert passed.passed and passed.gate == "shadow" and passed.report == "/r/report.html"
    assert passed.evidence == {"required": "agreement>=0.9", "run": shadow_run()}
    failed = await ShadowGate("agreement>=0.99", shadow_run()).check(state, "pre-rollout")
    assert not failed.passed and failed.detail == "shadow: agreement = 0.95 (required agreement>=0.99)"
