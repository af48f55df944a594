from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtest.gate import run_gate
from serving.backends.ports import free_port_block
from serving.rollout.gates import LoadTestGate, LoadTestGateSpec, WebhookGate
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
